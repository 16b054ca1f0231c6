"""The cross-attention fusion scorer: every word of a text looks at every region of an image.

Words and regions meet in the bi-encoder's joint space: one member of vtsearch-lite's trained head
pairs maps each MiniLM word state and each (PCA-compressed) region of the image tower's 7x7 map
to a unit vector, so the scorer starts from similarities that already mean something (SCAN, Lee
et al. 2018, run in the joint space) instead of learning a matcher from 6,000 images. Words are
the queries and regions the keys and values of ``softmax(QK^T / sqrt(d) + b) V``, where ``b`` is
a learned 2-D position bias (row plus column); each word is scored by how well what it found
matches it (the cosine of the word and its attended regions), and the words are pooled with
weights learned from their MiniLM states (so "a" and "the" count less than "dog").

What is learned depends only on similarities, positions and MiniLM states, never on coordinates
of the joint space: training reads features made by bi-encoders that never saw the training
images (cross-fitting), each with a joint space of its own, and the same parameters must work in
the shipped one. Nothing mixes pairs in a batch, so a pair's score never depends on the other
candidates it is scored with.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vtsearch.errors import ModelNotFoundError

VERSION = 2


@dataclass
class FusionConfig:
    text_dim: int = 384
    #: Size of the raw region tokens the image tower gives.
    region_in: int = 1280
    #: Whitened PCA of raw regions, the input of the region head.
    pca_dim: int = 256
    #: Hidden size of the (frozen) joint-space heads, as in vtsearch-lite.
    hidden: int = 1024
    #: Size of the joint space; a region token of this size is what the token cache stores.
    region_dim: int = 256
    grid: int = 7
    #: Starting sharpness of word-to-region attention (SCAN's lambda, best untrained on dev).
    init_sharpness: float = 9.0
    version: int = VERSION

    @property
    def n_regions(self) -> int:
        return self.grid * self.grid

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FusionConfig:
        raw = json.loads(text)
        if raw.get("version", 1) != VERSION:
            raise ModelNotFoundError(
                "these fusion weights were made by an older vtsearch (scorer version "
                f"{raw.get('version', 1)}, this one reads {VERSION}); retrain them with "
                "`vtsearch train fusion` or use the shipped ones"
            )
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class RegionReducer(nn.Module):
    """A fixed linear map (PCA fitted on training images) from raw region features to compact,
    unit-variance components."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("proj", torch.eye(d_in, d_out))

    @torch.no_grad()
    def fit(self, regions: torch.Tensor) -> RegionReducer:
        """PCA on ``[M, d_in]`` region features, with components scaled to unit variance."""
        x = regions.float()
        mean = x.mean(0)
        _, s, v = torch.linalg.svd(x - mean, full_matrices=False)
        k = self.proj.shape[1]
        std = (s[:k] / max(len(x) - 1, 1) ** 0.5).clamp(min=1e-6)
        self.mean.copy_(mean)
        self.proj.copy_(v[:k].T / std)
        return self

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return (regions.float() - self.mean) @ self.proj

    def inverse(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` with ``z @ W + b`` the raw features a reduced ``z`` stands for."""
        return torch.linalg.pinv(self.proj), self.mean


class ProjectionMLP(nn.Module):
    """``second(gelu(first(x))) + shortcut(x)``: vtsearch-lite's head shape, with any fixed affine
    map of its input folded into ``first`` and ``shortcut`` (see :meth:`fold`)."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.first = nn.Linear(d_in, hidden)
        self.second = nn.Linear(hidden, d_out)
        self.shortcut = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(F.gelu(self.first(x))) + self.shortcut(x)

    @torch.no_grad()
    def fold(
        self,
        mlp_in: nn.Linear,
        mlp_out: nn.Linear,
        linear: nn.Linear,
        w: torch.Tensor,
        b: torch.Tensor,
    ) -> ProjectionMLP:
        """Become ``x -> head(x @ w + b)`` for a head ``mlp_out(gelu(mlp_in(.))) + linear(.)``."""
        for mine, theirs in ((self.first, mlp_in), (self.shortcut, linear)):
            mine.weight.copy_(theirs.weight @ w.T)
            mine.bias.copy_(theirs.weight @ b + theirs.bias)
        self.second.load_state_dict(mlp_out.state_dict())
        return self


class JointRegions(nn.Module):
    """Raw region features -> unit vectors in the joint space: the tokens the cache stores."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.pca = RegionReducer(cfg.region_in, cfg.pca_dim)
        self.head = ProjectionMLP(cfg.pca_dim, cfg.hidden, cfg.region_dim)

    def fit(self, regions: torch.Tensor) -> JointRegions:
        """Fit the PCA (the head is set by :func:`attach_heads`)."""
        self.pca.fit(regions)
        return self

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.pca(regions)), dim=-1)


def attach_heads(scorer: FusionScorer, heads: nn.Module, member: int = 0) -> FusionScorer:
    """Copy one member of vtsearch-lite's head pairs (:class:`~vtsearch.models.lite.LiteHeads`)
    into the scorer's frozen word and region maps, with the z-scoring (and, for regions, the
    inverse of the fitted PCA) folded into their first layers."""
    with torch.no_grad():
        img, txt = heads.image_heads[member], heads.text_heads[member]
        w, b = scorer.reducer.pca.inverse()
        std, mean = heads.img_std.float(), heads.img_mean.float()
        scorer.reducer.head.fold(img.mlp[0], img.mlp[3], img.linear, w / std, (b - mean) / std)
        std, mean = heads.txt_std.float(), heads.txt_mean.float()
        scorer.words.fold(txt.mlp[0], txt.mlp[3], txt.linear, torch.diag(1.0 / std), -mean / std)
    return scorer


def content_words(mask: torch.Tensor) -> torch.Tensor:
    """The mask without the first and last token of each text ([CLS] and [SEP]) when that leaves
    at least one."""
    lens = mask.sum(1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)[None, :]
    inner = mask & (pos > 0) & (pos < lens - 1)
    return torch.where(inner.any(1, keepdim=True), inner, mask)


@dataclass
class FusionExplanation:
    """One text against one image, per token (see :meth:`FusionScorer.explain`)."""

    #: ``[T, N]``: where each token looked, a softmax over the regions (rows sum to 1).
    attention: torch.Tensor
    #: ``[T]``: each token's share of the score (sums to 1; 0 for [CLS], [SEP]).
    weights: torch.Tensor
    #: ``[T]``: cosine of each token and what it found (its attention-weighted regions).
    match: torch.Tensor
    #: The scorer's learned scale: ``score = gain * sum(weights * match)``.
    gain: float
    #: The fusion logit, as :meth:`FusionScorer.forward` gives it.
    score: float


class FusionScorer(nn.Module):
    """Scores (text, image) pairs from MiniLM token states and cached region tokens.

    Example:
        >>> scorer = FusionScorer(FusionConfig(region_in=24, pca_dim=8, hidden=16, region_dim=8))
        >>> text = torch.randn(5, 7, 384); mask = torch.ones(5, 7, dtype=torch.bool)
        >>> scorer.eval().score(text, mask, torch.randn(5, 49, 8)).shape
        torch.Size([5])
    """

    #: Parameters copied from the bi-encoder, never trained here.
    FROZEN = ("reducer.", "words.")

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or FusionConfig()
        self.reducer = JointRegions(cfg)
        self.words = ProjectionMLP(cfg.text_dim, cfg.hidden, cfg.region_dim)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(cfg.init_sharpness)))
        # 2-D position: a row bias plus a column bias on the attention logits.
        self.row = nn.Parameter(torch.zeros(cfg.grid))
        self.col = nn.Parameter(torch.zeros(cfg.grid))
        self.word_weight = nn.Linear(cfg.text_dim, 1)
        self.log_gain = nn.Parameter(torch.tensor(0.0))
        # Starts as SCAN: every content word weighted the same.
        nn.init.zeros_(self.word_weight.weight)
        nn.init.zeros_(self.word_weight.bias)

    def trainable(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(self.FROZEN)]

    def positions(self) -> torch.Tensor:
        return (self.row[:, None] + self.col[None, :]).reshape(-1)

    def text_words(self, text_states: torch.Tensor) -> torch.Tensor:
        """Unit joint-space vectors ``[B, T, region_dim]`` of each token."""
        return F.normalize(self.words(F.normalize(text_states.float(), dim=-1)), dim=-1)

    def forward(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor,
        regions: torch.Tensor,
        words: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B]`` for text states ``[B, T, text_dim]`` (mask ``[B, T]``) and region tokens
        ``[B, N, region_dim]``; ``words`` are the text's joint vectors when already computed."""
        if words is None:
            words = self.text_words(text_states)
        words = words.float()
        regs = F.normalize(regions.float(), dim=-1)  # cached tokens come back from int8
        n, d = regs.shape[1], regs.shape[2]
        q = words * (self.log_sharpness.exp() * math.sqrt(d))
        bias = self.positions()[:n].view(1, 1, 1, n)
        found = F.scaled_dot_product_attention(
            q.unsqueeze(1), regs.unsqueeze(1), regs.unsqueeze(1), attn_mask=bias
        ).squeeze(1)  # [B, T, d]: softmax(QK^T / sqrt(d) + b) V, what each word found
        per_word = (words * found).sum(-1) / found.norm(dim=-1).clamp(min=1e-6)
        return self.log_gain.exp() * (self.pooling(text_states, text_mask) * per_word).sum(-1)

    def pooling(self, text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Each token's share of the score ``[B, T]``: a softmax over the content words (0 for
        [CLS], [SEP] and padding), from the token's MiniLM state alone."""
        content = content_words(text_mask.bool())
        logit = self.word_weight(text_states.float()).squeeze(-1).masked_fill(~content, -1e9)
        return torch.softmax(logit, -1) * content

    @torch.inference_mode()
    def explain(
        self, text_states: torch.Tensor, text_mask: torch.Tensor, regions: torch.Tensor
    ) -> FusionExplanation:
        """How one text (``[1, T, text_dim]``, mask ``[1, T]``) scores one image (``[1, N,
        region_dim]``): what :meth:`forward` computes, written out and kept per token.

        ``gain * (weights * match).sum()`` is the :meth:`forward` score.

        Example:
            >>> scorer = FusionScorer(FusionConfig(region_in=24, pca_dim=8, hidden=16,
            ...                                    region_dim=8)).eval()
            >>> text = torch.randn(1, 5, 384); mask = torch.ones(1, 5, dtype=torch.bool)
            >>> scorer.explain(text, mask, torch.randn(1, 49, 8)).attention.shape
            torch.Size([5, 49])
        """
        words = self.text_words(text_states)[0]
        regs = F.normalize(regions.float(), dim=-1)[0]  # [N, d]
        n = regs.shape[0]
        # The logits scaled_dot_product_attention forms in forward: (q / sqrt(d)) . k + b, with
        # q = words * sharpness * sqrt(d).
        logits = self.log_sharpness.exp() * (words @ regs.T) + self.positions()[:n]
        attention = torch.softmax(logits, -1)  # [T, N]
        found = attention @ regs
        match = (words * found).sum(-1) / found.norm(dim=-1).clamp(min=1e-6)
        weights = self.pooling(text_states, text_mask)[0]
        gain = float(self.log_gain.exp())
        return FusionExplanation(
            attention, weights, match, gain, gain * float((weights * match).sum())
        )

    @torch.inference_mode()
    def score(
        self, text_states: torch.Tensor, text_mask: torch.Tensor, regions: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` without gradients; one text against many images is encoded once."""
        b = regions.shape[0]
        words = self.text_words(text_states)
        if text_states.shape[0] == 1 and b > 1:
            text_states, text_mask = text_states.expand(b, -1, -1), text_mask.expand(b, -1)
            words = words.expand(b, -1, -1)
        return self.forward(text_states, text_mask, regions, words)


def save_fusion(
    scorer: FusionScorer,
    path: Path | str,
    extra: dict | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """fp16 safetensors with the config and settings (``extra``) in the metadata; ``tensors`` are
    stored beside the scorer's own (e.g. the query banks, under ``bank.``)."""
    from safetensors.torch import save_file

    state = {**scorer.state_dict(), **(tensors or {})}
    out = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    meta = {"config": scorer.config.to_json(), "extra": json.dumps(extra or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)


def load_fusion(path: Path | str) -> tuple[FusionScorer, dict, dict[str, torch.Tensor]]:
    """The scorer, its settings, and the other tensors stored with it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"fusion scorer weights not found at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    scorer = FusionScorer(FusionConfig.from_json(meta.get("config", "{}")))
    own = set(scorer.state_dict())
    scorer.load_state_dict({k: v for k, v in state.items() if k in own})
    others = {k: v for k, v in state.items() if k not in own}
    return scorer.eval(), json.loads(meta.get("extra", "{}")), others
