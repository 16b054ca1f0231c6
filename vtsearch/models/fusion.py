"""The cross-attention fusion scorer: every word of a text looks at every region of an image.

Text token states are the queries; image region tokens (with 2-D position embeddings) are the
keys and values; ``softmax(QK^T / sqrt(d)) V`` (``F.scaled_dot_product_attention``) gathers, for
each word, what the image shows about it, and a small head turns the attended words into one score
per (text, image) pair. Nothing mixes pairs in a batch (no batch norm), so a pair's score never
depends on the other candidates it is scored with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vtsearch.errors import ModelNotFoundError


@dataclass
class FusionConfig:
    text_dim: int = 384
    #: Size of the raw region tokens the image tower gives (before the reducer).
    region_in: int = 1280
    #: Size of a region token after the fixed linear reducer; this is what the token cache stores.
    region_dim: int = 256
    grid: int = 7
    #: Small on purpose: every region of every candidate passes through it, on a laptop CPU.
    d: int = 128
    heads: int = 4
    layers: int = 1
    dropout: float = 0.1

    @property
    def n_regions(self) -> int:
        return self.grid * self.grid

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FusionConfig:
        return cls(**json.loads(text))


class RegionReducer(nn.Module):
    """A fixed linear map (PCA fitted on training images) from raw region features to the compact
    tokens the cache stores, so re-ranking reads 12 KB per image instead of 125 KB."""

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


class CrossAttentionBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.ff = nn.Sequential(
            nn.LayerNorm(d),
            nn.Linear(d, 4 * d),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * d, d),
        )
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        q = self._split(self.q(self.norm_q(words)))
        kv = self.norm_kv(regions)
        k, v = self._split(self.k(kv)), self._split(self.v(kv))
        att = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )  # softmax(QK^T / sqrt(d_head)) V
        b, h, t, dh = att.shape
        words = words + self.out(att.transpose(1, 2).reshape(b, t, h * dh))
        return words + self.ff(words)


class FusionScorer(nn.Module):
    """Scores (text, image) pairs from text token states and image region tokens.

    Example:
        >>> scorer = FusionScorer(FusionConfig(d=32, heads=2, layers=1, region_dim=16)).eval()
        >>> text = torch.randn(5, 7, 384); mask = torch.ones(5, 7, dtype=torch.bool)
        >>> scorer.score(text, mask, torch.randn(5, 49, 16)).shape
        torch.Size([5])
    """

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or FusionConfig()
        self.reducer = RegionReducer(cfg.region_in, cfg.region_dim)
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.d))
        self.region_in = nn.Linear(cfg.region_dim, cfg.d)
        # 2-D position: a row embedding plus a column embedding per region of the grid.
        self.row = nn.Parameter(torch.zeros(cfg.grid, cfg.d))
        self.col = nn.Parameter(torch.zeros(cfg.grid, cfg.d))
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(cfg.d, cfg.heads, cfg.dropout) for _ in range(cfg.layers)
        )
        # Matching: each word attends once more over the regions, and a per-word MLP reads the
        # word, what it found, and their product (the product is what makes a match easy to see).
        self.match_q = nn.Linear(cfg.d, cfg.d)
        self.match_k = nn.Linear(cfg.d, cfg.d)
        self.match_v = nn.Linear(cfg.d, cfg.d)
        self.head = nn.Sequential(
            nn.LayerNorm(3 * cfg.d), nn.Linear(3 * cfg.d, cfg.d), nn.GELU(), nn.Linear(cfg.d, 1)
        )
        nn.init.normal_(self.row, std=0.02)
        nn.init.normal_(self.col, std=0.02)

    def positions(self) -> torch.Tensor:
        g = self.config.grid
        return (self.row[:, None, :] + self.col[None, :, :]).reshape(g * g, -1)

    def forward(
        self, text_states: torch.Tensor, text_mask: torch.Tensor, regions: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``[B]`` for text states ``[B, T, text_dim]`` (mask ``[B, T]``) and reduced region
        tokens ``[B, N, region_dim]``."""
        words = self.text_in(text_states.float())
        regs = self.region_in(regions.float()) + self.positions()[: regions.shape[1]]
        for block in self.blocks:
            words = block(words, regs)
        found = F.scaled_dot_product_attention(
            self.match_q(words).unsqueeze(1),
            self.match_k(regs).unsqueeze(1),
            self.match_v(regs).unsqueeze(1),
        ).squeeze(1)  # [B, T, d]: softmax(QK^T / sqrt(d)) V per word
        per_word = self.head(torch.cat([words, found, words * found], dim=-1)).squeeze(-1)
        m = text_mask.to(per_word.dtype)
        return (per_word * m).sum(1) / m.sum(1).clamp(min=1.0)

    @torch.inference_mode()
    def score(
        self, text_states: torch.Tensor, text_mask: torch.Tensor, regions: torch.Tensor
    ) -> torch.Tensor:
        """``forward`` without gradients; one text against many images broadcasts its states."""
        b = regions.shape[0]
        if text_states.shape[0] == 1 and b > 1:
            text_states = text_states.expand(b, -1, -1)
            text_mask = text_mask.expand(b, -1)
        return self.forward(text_states, text_mask, regions)


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
