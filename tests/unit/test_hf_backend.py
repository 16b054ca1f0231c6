"""CLIP and SigLIP by local folder, with tiny models the tests save themselves."""

import pytest
import torch
from PIL import Image

from vtsearch.errors import ModelNotFoundError
from vtsearch.models.registry import load_embedder


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_siglip"])
def test_tiny_checkpoint_embeds_both_modalities(fixture, request):
    emb = load_embedder(request.getfixturevalue(fixture), device="cpu")
    t = emb.encode_texts(["a cat", "a red car parked on a long street at night"])
    i = emb.encode_pil([Image.new("RGB", (80, 50), "red"), Image.new("L", (20, 30), 128)])
    assert t.vectors.shape == (2, emb.dim) and i.vectors.shape == (2, emb.dim)
    torch.testing.assert_close(t.vectors.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(i.vectors.norm(dim=-1), torch.ones(2))
    assert t.states.shape[:2] == t.mask.shape and i.tokens.shape[0] == 2


def test_very_long_text_is_truncated_not_refused(tiny_clip):
    emb = load_embedder(tiny_clip, device="cpu")
    assert emb.encode_texts(["word " * 5000]).vectors.shape == (1, emb.dim)


def test_unknown_hub_name_says_how_to_use_a_local_folder():
    with pytest.raises(ModelNotFoundError, match="local folder"):
        load_embedder("nobody/no-such-clip-model", device="cpu")
