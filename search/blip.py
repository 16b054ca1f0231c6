"""BLIP image-text matching (ITM) as a re-ranker, for users with a network or a local checkpoint.

``BlipForImageTextRetrieval`` runs its text encoder with cross-attention over the image's patch
tokens and an ITM head says "match" or "no match". It reads pixels, not cached tokens, so the
candidates are decoded again at query time: only the top ``k`` ever are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtsearch.errors import ModelNotFoundError
from vtsearch.search.rerank import DEFAULT_RERANK_K

DEFAULT_BLIP = "Salesforce/blip-itm-base-coco"


class BlipReranker:
    """Scores (text, image) pairs with a BLIP ITM head: ``log p(match)``.

    Example:
        >>> rr = BlipReranker("Salesforce/blip-itm-base-coco")  # doctest: +SKIP
        >>> rr.score_images("a dog on a beach", [Image.open("a.jpg"), Image.open("b.jpg")])
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_BLIP,
        device: str = "cpu",
        default_k: int | None = None,
    ) -> None:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoTokenizer,
            BlipForImageTextRetrieval,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        local = Path(name_or_path).expanduser()
        source = str(local.resolve()) if local.is_dir() else name_or_path
        try:
            config = AutoConfig.from_pretrained(source)
            if config.model_type != "blip":
                raise ModelNotFoundError(
                    f"'{name_or_path}' is a '{config.model_type}' checkpoint, not BLIP"
                )
            self.model = BlipForImageTextRetrieval.from_pretrained(source).eval().to(device)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.processor = AutoImageProcessor.from_pretrained(source)
        except OSError as e:
            raise ModelNotFoundError(
                f"cannot load BLIP re-ranker '{name_or_path}': not a local folder and not "
                "downloadable (no network?). Download it where there is a network "
                "(huggingface-cli download NAME --local-dir DIR) and pass --reranker DIR."
            ) from e
        self.name = source
        self.device = torch.device(device)
        #: Candidates re-ranked by default (``DEFAULT_RERANK_K``, as for the fusion scorer).
        self.default_k = default_k or DEFAULT_RERANK_K
        self.max_tokens = int(config.text_config.max_position_embeddings)

    @torch.inference_mode()
    def _itm(self, texts: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        out = self.model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            pixel_values=pixels.to(self.device),
            use_itm_head=True,
        )
        logits = out.itm_score if hasattr(out, "itm_score") else out[0]
        return torch.log_softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()

    def score_images(
        self, text: str, images: Sequence[Image.Image | None], batch: int = 16
    ) -> np.ndarray:
        """``log p(match)`` of one text against each image; ``-inf`` where an image is None (a
        file that can no longer be read)."""
        out = np.full(len(images), -np.inf, dtype=np.float32)
        ok = [i for i, im in enumerate(images) if im is not None]
        for s in range(0, len(ok), batch):
            part = ok[s : s + batch]
            out[part] = self._itm([text] * len(part), [images[i] for i in part])
        return out

    def score_texts(self, image: Image.Image, texts: Sequence[str], batch: int = 16) -> np.ndarray:
        """``log p(match)`` of one image against each text."""
        parts = [
            self._itm(texts[s : s + batch], [image] * len(texts[s : s + batch]))
            for s in range(0, len(texts), batch)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
