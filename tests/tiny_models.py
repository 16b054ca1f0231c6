"""Tiny CLIP and SigLIP checkpoints built and saved by the tests (random weights, no network)."""

from __future__ import annotations

from pathlib import Path

import torch


def _tokenizer():
    from transformers import AutoTokenizer

    from vtsearch.models.towers import minilm_path

    # A real WordPiece vocabulary that ships in a pip package: no hub download needed.
    return AutoTokenizer.from_pretrained(minilm_path())


def _tiny_towers(tok) -> tuple[dict, dict]:
    """Text and vision tower sizes shared by every tiny checkpoint."""
    text = dict(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
    )
    vision = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    return text, vision


def save_tiny_clip(folder: Path, kind: str = "clip", seed: int = 0) -> Path:
    """Write a tiny ``CLIPModel`` or ``SiglipModel`` with tokenizer and image processor."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    torch.manual_seed(seed)
    tok = _tokenizer()
    text, vision = _tiny_towers(tok)
    if kind == "clip":
        text.update(
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        proc = SiglipImageProcessor(size={"height": 32, "width": 32})
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """Write a tiny ``BlipForImageTextRetrieval`` (ITM head) with tokenizer and image processor."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    torch.manual_seed(seed)
    tok = _tokenizer()
    text, vision = _tiny_towers(tok)
    text.update(
        encoder_hidden_size=32,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
    )
    config = BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)
    model = BlipForImageTextRetrieval(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
