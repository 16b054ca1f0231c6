"""The settings of vtsearch-lite's trained part, stored as JSON in its weights file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

TEXT_FEATURES = 384


@dataclass
class LiteConfig:
    """Shape of the trained part and the settings of the ConSE branch."""

    hidden: int = 1024
    #: Output size of one head pair; ``members`` independently trained pairs are concatenated.
    out_dim: int = 256
    members: int = 3
    dropout: float = 0.4
    #: Dropout on the z-scored tower features: Flickr8k is small, and the heads overfit fast.
    in_dropout: float = 0.2
    #: Weight of the head similarity in the final score; the rest goes to ConSE.
    alpha: float = 0.65
    #: ConSE keeps the top ``topk`` ImageNet classes of each image ...
    topk: int = 50
    #: ... with probabilities from ``softmax(logits / class_temp)``.
    class_temp: float = 2.0
    #: Texts get the same treatment: the top ``text_topk`` classes by MiniLM similarity, weighted
    #: by ``softmax(cos / text_temp)``, so both sides meet in the span of the class embeddings.
    #: 0 keeps the raw MiniLM vector.
    text_topk: int = 50
    text_temp: float = 0.05
    #: Share of the raw MiniLM vector kept next to the text's class mixture.
    text_beta: float = 0.0
    #: Image heads also read the z-scored ImageNet logits, concatenated to the pooled features.
    image_logits: bool = False
    #: The concept branch: a second ConSE vector of each image in all-mpnet-base-v2's space
    #: (``concept_dim`` 768; 0: none), which label-like queries read (``query_kind``).
    concept_dim: int = 0
    #: Its share of an image vector's squared norm, next to the heads' and ConSE's 1.
    concept_weight: float = 0.35
    #: A label's score: ``label_alpha * cos(heads) + (1 - label_alpha) * cos(concepts)``.
    label_alpha: float = 0.1
    #: Which class texts its class vectors embed (``training.datasets.class_texts``).
    concept_style: str = "photo_definition"
    #: Words the caption heads know well (in at least 300 of Flickr8k's 6,000 training images'
    #: captions): a label made of them alone ("a dog", "the beach") is scored as a caption.
    caption_words: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        mixed = self.members * self.out_dim + (TEXT_FEATURES if self.alpha < 1.0 else 0)
        return mixed + self.concept_dim

    @classmethod
    def from_json(cls, text: str) -> LiteConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in json.loads(text).items() if k in known}
        values["caption_words"] = tuple(values.get("caption_words", ()))
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
