"""Re-rank the bi-encoder's candidates with the cross-attention fusion scorer.

The final score is ``bi-encoder similarity + mix * fusion logit``: the scorer was trained as a
correction on top of the bi-encoder, so it decides among close candidates without throwing away
what the bi-encoder already knows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import vtsearch.models as models_pkg
from vtsearch.errors import ConfigError
from vtsearch.models.base import TextEmbedding, file_revision
from vtsearch.models.fusion import FusionScorer, load_fusion

WEIGHTS_DIR = Path(models_pkg.__file__).resolve().parent / "weights"
DEFAULT_RERANK_K = 50


class FusionReranker:
    """A trained ``FusionScorer`` with its mixing weight and default depth.

    Example:
        >>> rr = FusionReranker.load(Path("fusion.safetensors"))  # doctest: +SKIP
        >>> rr.score_images(text_embedding, region_tokens)  # doctest: +SKIP
    """

    def __init__(
        self,
        scorer: FusionScorer,
        mix: float = 1.0,
        default_k: int = DEFAULT_RERANK_K,
        revision: str = "",
    ) -> None:
        self.scorer = scorer.eval()
        self.mix = mix
        self.default_k = default_k
        #: Names the reducer behind cached tokens: a retrained scorer must not read old tokens.
        self.revision = revision

    @classmethod
    def load(cls, path: Path) -> FusionReranker:
        scorer, extra = load_fusion(path)
        mix, k = float(extra.get("mix", 1.0)), int(extra.get("rerank_k", DEFAULT_RERANK_K))
        return cls(scorer, mix, k, file_revision(path))

    @property
    def token_shape(self) -> tuple[int, int]:
        cfg = self.scorer.config
        return cfg.n_regions, cfg.region_dim

    @torch.inference_mode()
    def reduce(self, raw_tokens: torch.Tensor) -> np.ndarray:
        """Raw region tokens from the image tower -> the compact tokens the cache stores."""
        return self.scorer.reducer(raw_tokens.float().cpu()).numpy()

    def score_images(self, text: TextEmbedding, regions: np.ndarray) -> np.ndarray:
        """Fusion logits of one text (``text`` holds one row) against ``regions [K, N, C]``."""
        states, mask = text.states[:1].float().cpu(), text.mask[:1].cpu()
        return self.scorer.score(states, mask, torch.from_numpy(regions)).numpy()

    def score_texts(self, regions: np.ndarray, texts: TextEmbedding) -> np.ndarray:
        """Fusion logits of one image (``regions [1, N, C]``) against each of ``texts``."""
        k = texts.states.shape[0]
        reg = torch.from_numpy(regions[:1]).expand(k, -1, -1)
        return self.scorer.score(texts.states.float().cpu(), texts.mask.cpu(), reg).numpy()


def default_weights(model_id: str) -> Path:
    return WEIGHTS_DIR / f"{model_id}-fusion.safetensors"


def load_reranker(model_id: str, name: str | None) -> FusionReranker | None:
    """The re-ranker asked for.

    ``None`` or ``"fusion"``: the model's shipped scorer, when it has one; ``"none"``; or the path
    of a fusion weights file (e.g. one fine-tuned on your own captions).
    """
    if name == "none":
        return None
    if name in (None, "fusion"):
        path = default_weights(model_id)
        if path.is_file():
            return FusionReranker.load(path)
        if name == "fusion":
            raise ConfigError(f"model '{model_id}' has no fusion scorer; use --no-rerank")
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"re-ranker '{name}' is neither 'fusion', 'none' nor a weights file")
    return FusionReranker.load(path)
