"""vtsearch-lite: the offline default bi-encoder.

Two locked towers (EfficientNet-Lite0 for images, all-MiniLM-L6-v2 for texts) and a small trained
part, shipped in ``weights/vtsearch-lite.safetensors``:

- projection heads trained on Flickr8k captions (LiT-style: the towers never change), and
- a ConSE branch (Norouzi et al., 2014) that places an image at the probability-weighted mean of the
  MiniLM embeddings of its top ImageNet classes. It carries the 1,000 ImageNet concepts that
  Flickr8k's people-and-dogs captions never name.

The final vector concatenates both parts, weighted so that a dot product is
``alpha * cos(heads) + (1 - alpha) * cos(ConSE image, MiniLM text)``. Image-image dot products mix
the head similarity with the similarity of the two class distributions, both sensible.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vtsearch.errors import ModelNotFoundError
from vtsearch.models.base import Embedder, ImageEmbedding, TextEmbedding, file_revision
from vtsearch.models.lite_config import TEXT_FEATURES, LiteConfig

MODEL_ID = "vtsearch-lite"
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / f"{MODEL_ID}.safetensors"
IMAGE_FEATURES = 1280
NUM_CLASSES = 1000


class ProjectionHead(nn.Module):
    """A two-layer MLP plus a linear shortcut; the shortcut generalises better on 6k images."""

    def __init__(self, d_in: int, hidden: int, d_out: int, dropout: float, in_dropout: float):
        super().__init__()
        self.in_drop = nn.Dropout(in_dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
        )
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_drop(x)
        return self.mlp(x) + self.linear(x)


class LiteHeads(nn.Module):
    """Everything trained or precomputed: maps frozen tower outputs to final vectors.

    Both :class:`LiteEmbedder` and the benchmark call :meth:`image_vectors` and
    :meth:`text_vectors`, so vectors computed from cached tower features are the same vectors the
    embedder returns.
    """

    def __init__(self, config: LiteConfig) -> None:
        super().__init__()
        self.config = config
        # z-score statistics of the frozen features on Flickr8k train.
        self.register_buffer("img_mean", torch.zeros(IMAGE_FEATURES))
        self.register_buffer("img_std", torch.ones(IMAGE_FEATURES))
        self.register_buffer("txt_mean", torch.zeros(TEXT_FEATURES))
        self.register_buffer("txt_std", torch.ones(TEXT_FEATURES))
        # Unit MiniLM embeddings of the ImageNet class texts, precomputed at training time.
        self.register_buffer("class_emb", torch.zeros(NUM_CLASSES, TEXT_FEATURES))
        c = config
        d_img = IMAGE_FEATURES
        if c.image_logits:
            # z-score statistics of the ImageNet logits on Flickr8k train.
            self.register_buffer("logit_mean", torch.zeros(NUM_CLASSES))
            self.register_buffer("logit_std", torch.ones(NUM_CLASSES))
            d_img += NUM_CLASSES
        # An ensemble of independently trained head pairs: averaging their cosines (concatenating
        # their unit outputs) smooths the seed-to-seed noise of heads trained on 6k images.
        self.image_heads = nn.ModuleList(
            ProjectionHead(d_img, c.hidden, c.out_dim, c.dropout, c.in_dropout)
            for _ in range(c.members)
        )
        self.text_heads = nn.ModuleList(
            ProjectionHead(TEXT_FEATURES, c.hidden, c.out_dim, c.dropout, c.in_dropout)
            for _ in range(c.members)
        )
        self.logit_scale = nn.Parameter(torch.full((c.members,), math.log(1 / 0.07)))
        if c.concept_dim:
            # Unit all-mpnet-base-v2 embeddings of the ImageNet class texts.
            self.register_buffer("concept_emb", torch.zeros(NUM_CLASSES, c.concept_dim))

    def head_images(
        self, pooled: torch.Tensor, member: int | None = None, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit head vectors of one ensemble member, or of all concatenated (still unit norm).

        ``logits`` (ImageNet, ``[B, 1000]``) is required when ``config.image_logits`` is set.
        """
        x = (pooled - self.img_mean) / self.img_std
        if self.config.image_logits:
            if logits is None:
                raise ValueError("these heads read ImageNet logits too; pass logits=")
            x = torch.cat([x, (logits.float() - self.logit_mean) / self.logit_std], dim=-1)
        return self._heads(self.image_heads, x, member)

    def head_texts(self, minilm: torch.Tensor, member: int | None = None) -> torch.Tensor:
        return self._heads(self.text_heads, (minilm - self.txt_mean) / self.txt_std, member)

    @staticmethod
    def _heads(heads: nn.ModuleList, x: torch.Tensor, member: int | None) -> torch.Tensor:
        if member is not None:
            return F.normalize(heads[member](x), dim=-1)
        parts = [F.normalize(h(x), dim=-1) for h in heads]
        return torch.cat(parts, dim=-1) / math.sqrt(len(parts))

    def _class_mixture(
        self, scores: torch.Tensor, k: int, temp: float, classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        classes = self.class_emb if classes is None else classes
        probs = torch.softmax(scores.float() / temp, dim=-1)
        top, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
        top = top / top.sum(-1, keepdim=True)
        return F.normalize(torch.einsum("bk,bkd->bd", top, classes[idx]), dim=-1)

    def conse(self, logits: torch.Tensor) -> torch.Tensor:
        """Unit ConSE vectors in MiniLM space from ImageNet logits ``[B, 1000]``."""
        return self._class_mixture(logits, self.config.topk, self.config.class_temp)

    def text_conse(self, minilm: torch.Tensor) -> torch.Tensor:
        """Unit MiniLM-space vectors of texts, pulled towards the classes they are closest to."""
        cfg = self.config
        if cfg.text_topk <= 0:
            return F.normalize(minilm, dim=-1)
        mixture = self._class_mixture(minilm @ self.class_emb.T, cfg.text_topk, cfg.text_temp)
        return F.normalize(cfg.text_beta * minilm + (1.0 - cfg.text_beta) * mixture, dim=-1)

    def image_vectors(self, pooled: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Final unit vectors from pooled Lite0 features ``[B, 1280]`` and logits ``[B, 1000]``."""
        head = self.head_images(pooled.float(), logits=logits)
        mixed = self._mix(head, lambda: self.conse(logits))
        c = self.config
        if not c.concept_dim:
            return mixed
        concepts = self._class_mixture(logits, c.topk, c.class_temp, self.concept_emb)
        return torch.cat([mixed, math.sqrt(c.concept_weight) * concepts], -1) / self._spread

    def text_vectors(
        self,
        minilm: torch.Tensor,
        concepts: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final vectors from unit MiniLM sentence vectors ``[B, 384]``; with a concept branch,
        rows where ``labels`` holds are labels, scored by their all-mpnet-base-v2 vectors
        ``concepts`` (``[B, 768]``, any values in caption rows).

        With a concept branch a vector is not of unit length: a caption's dot product with an
        image vector is exactly ``alpha * cos(heads) + (1 - alpha) * cos(ConSE)``, as without
        one, and a label's ``label_alpha * cos(heads) + (1 - label_alpha) * cos(concepts)``.
        """
        minilm = minilm.float()
        head = self.head_texts(minilm)
        mixed = self._mix(head, lambda: self.text_conse(minilm))
        c = self.config
        if not c.concept_dim:
            return mixed
        caption = torch.cat([mixed, mixed.new_zeros(len(mixed), c.concept_dim)], -1)
        if labels is None or not bool(labels.any()):
            return caption * self._spread
        label = torch.cat(
            [
                (c.label_alpha / math.sqrt(c.alpha)) * head,
                head.new_zeros(len(head), TEXT_FEATURES),
                ((1.0 - c.label_alpha) / math.sqrt(c.concept_weight)) * concepts.float(),
            ],
            -1,
        )
        return torch.where(labels.view(-1, 1), label, caption) * self._spread

    @property
    def _spread(self) -> float:
        """The image vectors' norm before they are made unit length."""
        return math.sqrt(1.0 + self.config.concept_weight)

    def _mix(self, head: torch.Tensor, other: Callable[[], torch.Tensor]) -> torch.Tensor:
        a = self.config.alpha
        if a >= 1.0:
            return head
        return torch.cat([math.sqrt(a) * head, math.sqrt(1.0 - a) * other()], dim=-1)


def save_heads(heads: LiteHeads, path: Path | str) -> None:
    """Write the trained part as fp16 safetensors with its config in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in heads.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"config": heads.config.to_json(), "model": MODEL_ID})


def load_heads(path: Path | str = WEIGHTS_PATH) -> LiteHeads:
    """Read a weights file written by :func:`save_heads` (fp16 on disk, fp32 in memory)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"vtsearch-lite weights not found at {path}; reinstall vtsearch")
    with safe_open(str(path), framework="pt") as f:
        config = LiteConfig.from_json((f.metadata() or {}).get("config", "{}"))
        state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    heads = LiteHeads(config)
    heads.load_state_dict(state)
    return heads.eval()


class LiteEmbedder(Embedder):
    """The offline default model: locked Lite0 + MiniLM towers, trained heads, ConSE branch.

    Example:
        >>> model = load_lite()
        >>> img = model.encode_pil([Image.open("cat.jpg")]).vectors  # doctest: +SKIP
        >>> txt = model.encode_texts(["a cat"]).vectors
        >>> score = (img @ txt.T).item()  # doctest: +SKIP
    """

    model_id = MODEL_ID

    def __init__(self, weights: Path | str = WEIGHTS_PATH, device: torch.device | str = "cpu"):
        from vtsearch.models.towers import quiet_text_tower

        self.heads = load_heads(weights)
        self.dim = self.heads.config.dim
        self.revision = file_revision(weights)
        self._image_tower: torch.nn.Module | None = None
        self.text_tower = quiet_text_tower(traced=torch.device(device).type == "cpu").eval()
        self._transform: Callable[[Image.Image], torch.Tensor] | None = None
        self._concept_tower: torch.nn.Module | None = None
        self._concept_lock = threading.Lock()
        self._caption_words = frozenset(self.heads.config.caption_words)
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        if self._transform is None:  # built on first use, like the image tower
            from vtsearch.models.towers import lite_transform

            self._transform = lite_transform()
        return self._transform

    @property
    def image_tower(self) -> torch.nn.Module:
        """Built on first use: a text query never needs it, and it costs 0.75 s to load."""
        if self._image_tower is None:
            from vtsearch.models.towers import ImageTower

            # Often first reached inside encode_images' inference mode: weights made there would
            # be inference tensors that no later in-place change (e.g. channels-last) may touch.
            with torch.inference_mode(False):
                self._image_tower = ImageTower().eval().to(self.device)
        return self._image_tower

    @image_tower.setter
    def image_tower(self, module: torch.nn.Module) -> None:
        self._image_tower = module

    def encode_images(self, pixels: torch.Tensor) -> ImageEmbedding:
        with torch.inference_mode():
            pooled, tokens, logits = self.image_tower(pixels.to(self.device))
            vectors = self.heads.image_vectors(pooled, logits)
        return ImageEmbedding(vectors=vectors, tokens=tokens)

    def encode_texts(self, texts: Sequence[str]) -> TextEmbedding:
        texts = list(texts)
        return self._encode(texts, [self.reads_as_label(t) for t in texts])

    def encode_as(self, texts: Sequence[str], label: bool) -> TextEmbedding:
        texts = list(texts)
        return self._encode(texts, [label and bool(self.heads.config.concept_dim)] * len(texts))

    def reads_as_label(self, text: str) -> bool:
        """A label-like text not made only of words the caption heads know well."""
        if not self.heads.config.concept_dim:
            return False
        from vtsearch.models.query_kind import all_known, is_label

        return is_label(text) and not all_known(text, self._caption_words)

    def _encode(self, texts: list[str], flags: list[bool]) -> TextEmbedding:
        with torch.inference_mode():
            pooled, states, mask = self.text_tower(texts)
            labels = concepts = None
            if any(flags):
                labels = torch.tensor(flags, device=pooled.device)
                # Only the labels are encoded: captions never load the concept encoder.
                rows = labels.nonzero().flatten()
                concepts = pooled.new_zeros(len(texts), self.heads.config.concept_dim)
                found = self.concept_tower([texts[i] for i in rows.tolist()])[0]
                concepts[rows] = found.to(concepts.dtype)
            vectors = self.heads.text_vectors(pooled, concepts, labels)
        return TextEmbedding(vectors=vectors, states=states, mask=mask)

    @property
    def concept_tower(self) -> torch.nn.Module:
        """all-mpnet-base-v2, loaded when the first label is encoded (0.3 s from its trace)."""
        if self._concept_tower is None:
            from vtsearch.models.mpnet import mpnet_path
            from vtsearch.models.towers import quiet_text_tower

            with self._concept_lock:
                if self._concept_tower is None:
                    traced = self.device.type == "cpu"
                    tower = quiet_text_tower(traced=traced, path=mpnet_path()).eval()
                    self._concept_tower = tower.to(self.device)
        return self._concept_tower

    def text_tokens(self, text: str) -> list[str]:
        return self.text_tower.tokens(text)

    def to(self, device: torch.device | str) -> LiteEmbedder:
        self.device = torch.device(device)
        if self.device.type != "cpu" and getattr(self.text_tower, "traced", None) is not None:
            from vtsearch.models.towers import quiet_text_tower

            # The CPU trace may hold CPU constants; other devices run transformers' model.
            self.text_tower = quiet_text_tower(traced=False).eval()
        if self._concept_tower is not None and self.device.type != "cpu":
            self._concept_tower = None  # reloaded untraced on first use there
        for module in (self.heads, self._image_tower, self.text_tower, self._concept_tower):
            if module is not None:
                module.to(self.device)
        return self


def load_lite(device: torch.device | str = "cpu") -> LiteEmbedder:
    """Load vtsearch-lite with its shipped weights.

    Args:
        device: where to run the towers and heads.

    Returns:
        A ready :class:`LiteEmbedder`.

    Example:
        >>> model = load_lite()
        >>> model.encode_texts(["a dog on a beach"]).vectors.shape == (1, model.dim)
        True
    """
    return LiteEmbedder(WEIGHTS_PATH, device=device)
