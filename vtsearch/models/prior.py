"""Query-bank prior: how much an item is a "hub" that many unrelated queries land on.

Nearest-neighbour search in a joint embedding space has hubs: a few images sit close to a great
many captions and crowd the top of unrelated queries. Querybank normalisation (Bogolin et al.,
"Cross Modal Retrieval with Querybank Normalisation", CVPR 2022; the inverted softmax of Smith
et al., 2017) measures each candidate against a fixed bank of typical queries and subtracts that:

    prior(v) = alpha * (logsumexp(beta * bank @ v) - log |bank|) / beta

The bank is a sample of the model's own training queries (captions for text->image search, images
for image->text), shipped with the re-ranker, so the prior of any indexed item is computed from
its vector alone, the same way on every machine.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class QueryBankPrior:
    """``prior(vectors)`` for candidates, from a bank of query vectors ``[N, D]``.

    Example:
        >>> bank = torch.nn.functional.normalize(torch.randn(64, 8), dim=1)
        >>> QueryBankPrior(bank, beta=20.0, alpha=0.75).prior(bank[:3].numpy()).shape
        (3,)
    """

    def __init__(self, bank: torch.Tensor, beta: float, alpha: float) -> None:
        self.bank = bank.float()
        self.beta = float(beta)
        self.alpha = float(alpha)

    def raw(self, vectors: np.ndarray | torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """The un-weighted prior ``(logsumexp(beta * bank @ v) - log N) / beta`` per vector."""
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        offset = math.log(len(self.bank))
        out = [
            (torch.logsumexp(self.beta * (v[i : i + chunk] @ self.bank.T), dim=1) - offset)
            / self.beta
            for i in range(0, len(v), chunk)
        ]
        return torch.cat(out) if out else torch.zeros(0)

    @torch.inference_mode()
    def prior(self, vectors: np.ndarray | torch.Tensor) -> np.ndarray:
        """What to subtract from each candidate's bi-encoder similarity."""
        return (self.alpha * self.raw(vectors)).numpy()
