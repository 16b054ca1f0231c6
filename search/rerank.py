"""Re-rank the bi-encoder's candidates with the cross-attention fusion scorer.

The final score is ``bi-encoder similarity - alpha * prior + mix * fusion logit``: the scorer was
trained as a correction on top of the bi-encoder, so it decides among close candidates without
throwing away what the bi-encoder already knows, and the query-bank prior
(:mod:`vtsearch.models.prior`) discounts "hub" candidates that sit close to every query.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import vtsearch.models as models_pkg
from vtsearch.errors import ConfigError
from vtsearch.models.base import TextEmbedding, file_revision, module_revision
from vtsearch.models.fusion import FusionScorer, load_fusion
from vtsearch.models.prior import QueryBankPrior
from vtsearch.search.query import one_torch_thread

if TYPE_CHECKING:
    from vtsearch.search.blip import BlipReranker
    from vtsearch.storage.tokens import TokenCache

WEIGHTS_DIR = Path(models_pkg.__file__).resolve().parent / "weights"
#: Candidates re-ranked when neither the query nor the re-ranker's weights say otherwise: the
#: smallest depth within 0.2 dev R@1 points of the best (``bench/rerank_depth.py``), recorded as
#: ``rerank_k`` in the shipped weights. Queries, ``vtsearch eval`` and
#: ``bench/rerank_latency.py`` use it.
DEFAULT_RERANK_K = 10


class FusionReranker:
    """A trained ``FusionScorer`` with its mixing weight and default depth.

    Example:
        >>> rr = FusionReranker.load(Path("fusion.safetensors"))  # doctest: +SKIP
        >>> rr.score_images(text_embedding, region_tokens)  # doctest: +SKIP
    """

    def __init__(
        self,
        scorer: FusionScorer,
        mix: dict[str, float] | float = 1.0,
        default_k: int = DEFAULT_RERANK_K,
        revision: str = "",
        priors: dict[str, QueryBankPrior] | None = None,
    ) -> None:
        self.scorer = scorer.eval()
        #: Weight of the fusion logit per direction ("t2i", "i2t"), in bi-encoder score units.
        self.mix = mix if isinstance(mix, dict) else {"t2i": mix, "i2t": mix}
        self.default_k = default_k
        #: The weights file's revision. Token caches made before ``token_revision`` existed
        #: carry it; they are still this scorer's when the file is the one that made them.
        self.revision = revision
        #: Names what produced cached tokens, the image-side reducer alone: a scorer fine-tuned
        #: with the reducer frozen reads the tokens its base cached, a retrained one does not.
        self.token_revision = "r-" + module_revision(scorer.reducer)
        self.priors = priors or {}

    def reads_tokens_of(self, revision: str) -> bool:
        """Whether tokens cached under ``revision`` are this scorer's to read."""
        return revision in (self.token_revision, self.revision) and bool(revision)

    @classmethod
    def load(cls, path: Path) -> FusionReranker:
        return cls.from_loaded(*load_fusion(path), path)

    @classmethod
    def from_loaded(
        cls, scorer: FusionScorer, extra: dict, tensors: dict[str, torch.Tensor], path: Path
    ) -> FusionReranker:
        """From what :func:`~vtsearch.models.fusion.load_fusion` read out of ``path``."""
        k = int(extra.get("rerank_k", DEFAULT_RERANK_K))
        if "t2i" not in extra:  # one mixing weight for both directions, no query banks
            return cls(scorer, float(extra.get("mix", 1.0)), k, file_revision(path))
        banks = {"t2i": tensors.get("bank.texts"), "i2t": tensors.get("bank.images")}
        priors = {
            d: QueryBankPrior(banks[d], extra[d]["beta"], extra[d]["alpha"])
            for d in ("t2i", "i2t")
            if banks[d] is not None and extra[d].get("alpha")
        }
        mix = {d: float(extra[d]["mix"]) for d in ("t2i", "i2t")}
        return cls(scorer, mix, k, file_revision(path), priors)

    @one_torch_thread()
    def prior(self, direction: str, vectors: np.ndarray) -> np.ndarray:
        """What to subtract from the candidates' bi-encoder scores (zeros without a bank)."""
        p = self.priors.get(direction)
        if p is None:
            return np.zeros(len(vectors), dtype=np.float32)
        return p.prior(vectors)

    @property
    def token_shape(self) -> tuple[int, int]:
        cfg = self.scorer.config
        return cfg.n_regions, cfg.region_dim

    @torch.inference_mode()
    def reduce(self, raw_tokens: torch.Tensor) -> np.ndarray:
        """Raw region tokens from the image tower -> the compact tokens the cache stores."""
        return self.scorer.reducer(raw_tokens.float().cpu()).numpy()

    @one_torch_thread()
    def score_images(self, text: TextEmbedding, regions: np.ndarray) -> np.ndarray:
        """Fusion logits of one text (``text`` holds one row) against ``regions [K, N, C]``."""
        states, mask = text.states[:1].float().cpu(), text.mask[:1].cpu()
        return self.scorer.score(states, mask, torch.from_numpy(regions)).numpy()

    @one_torch_thread()
    def score_texts(self, regions: np.ndarray, texts: TextEmbedding) -> np.ndarray:
        """Fusion logits of one image (``regions [1, N, C]``) against each of ``texts``."""
        k = texts.states.shape[0]
        reg = torch.from_numpy(regions[:1]).expand(k, -1, -1)
        return self.scorer.score(texts.states.float().cpu(), texts.mask.cpu(), reg).numpy()


def default_weights(model_id: str) -> Path:
    return WEIGHTS_DIR / f"{model_id}-fusion.safetensors"


def load_reranker(
    model_id: str, name: str | None, device: str = "cpu"
) -> FusionReranker | BlipReranker | None:
    """The re-ranker asked for.

    ``None`` or ``"fusion"``: the model's shipped scorer, when it has one; ``"none"``; the path
    of a fusion weights file (e.g. one fine-tuned on your own captions); ``"blip"`` (the default
    BLIP ITM checkpoint), ``"blip:NAME"`` or the folder of a BLIP checkpoint.
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
    if name == "blip" or name.startswith("blip:"):
        from vtsearch.search.blip import DEFAULT_BLIP, BlipReranker

        return BlipReranker(name[5:] or DEFAULT_BLIP, device)
    path = Path(name).expanduser()
    if path.is_dir():
        from vtsearch.search.blip import BlipReranker

        return BlipReranker(str(path), device)
    if not path.is_file():
        raise ConfigError(
            f"re-ranker '{name}' is neither 'fusion', 'none', 'blip[:NAME]', a BLIP folder nor "
            "a fusion weights file"
        )
    return FusionReranker.load(path)


def open_token_cache(folder: Path, reranker: FusionReranker) -> TokenCache | None:
    """The collection's token cache for reading, when it holds this scorer's tokens."""
    from vtsearch.storage.tokens import TokenCache

    cache = TokenCache.open_existing(folder)
    if cache is None or (cache.n_tokens, cache.dim) != reranker.token_shape:
        return None
    return cache if reranker.reads_tokens_of(cache.revision) else None


def token_cache_for_indexing(folder: Path, reranker: FusionReranker) -> TokenCache:
    """The token cache an index run writes this scorer's tokens to: the collection's own when it
    holds them (a cache an older version keyed by the weights file included), else a new one."""
    from vtsearch.storage.tokens import TokenCache

    found = open_token_cache(folder, reranker)
    revision = found.revision if found is not None else reranker.token_revision
    return TokenCache(folder, *reranker.token_shape, revision)
