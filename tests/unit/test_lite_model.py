"""vtsearch-lite: tower weights, shipped model behaviour, and the training path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vtsearch.models.lite import (
    WEIGHTS_PATH,
    LiteConfig,
    LiteEmbedder,
    load_heads,
    load_lite,
    save_heads,
)
from vtsearch.models.towers import EvenSameConv

skimage = pytest.importorskip("skimage")
SAMPLES = Path(skimage.__file__).parent / "data"
# ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = set(range(281, 286))
PHOTOS = {
    "a cat": "chelsea.png",
    "a cup of coffee": "coffee.png",
    "a rocket launch": "rocket.jpg",
    "a motorcycle": "motorcycle_left.png",
    "an astronaut": "astronaut.png",
}


def _sample(name: str) -> Image.Image:
    path = SAMPLES / name
    if not path.is_file():
        pytest.skip(f"scikit-image sample {name} not installed")
    return Image.open(path).convert("RGB")


@pytest.fixture(scope="module")
def model() -> LiteEmbedder:
    if not WEIGHTS_PATH.is_file():
        pytest.skip("vtsearch-lite weights not built")
    return load_lite()


def test_lite0_key_mapping_recognises_a_cat(model: LiteEmbedder) -> None:
    pixels = model.transform(_sample("chelsea.png")).unsqueeze(0)
    with torch.inference_mode():
        _, tokens, logits = model.image_tower(pixels)
    assert tokens.shape == (1, 49, 1280)
    top5 = set(logits[0].topk(5).indices.tolist())
    assert top5 & CAT_CLASSES, f"no cat class in top 5: {top5}"


def test_folded_channels_last_tower_equals_timms_own_network(model: LiteEmbedder) -> None:
    """Batch norms folded into the convolutions, channels-last layout: the same outputs as the
    network timm builds, run as it comes."""
    import timm

    from vtsearch.models.towers import _lite0_state_dict, map_lite_keys

    names = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
    pixels = torch.stack([model.transform(_sample(n)) for n in names])
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ref.load_state_dict(map_lite_keys(_lite0_state_dict(), ref))
    ref.eval()
    tower = model.image_tower
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.modules())
    assert sum(isinstance(m, EvenSameConv) for m in tower.modules()) == 5
    with torch.inference_mode():
        fmap = ref.forward_features(pixels)
        pooled, tokens, logits = tower(pixels)
    assert torch.allclose(pooled, fmap.mean(dim=(2, 3)), atol=1e-4)
    assert torch.allclose(tokens, fmap.flatten(2).transpose(1, 2), atol=5e-4)
    assert torch.allclose(logits, ref.classifier(fmap.mean(dim=(2, 3))), atol=1e-3)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("size", [(16, 16), (14, 10), (15, 16), (13, 9), (2, 2)])
def test_even_same_conv_equals_tf_same_padding(kernel: int, groups: int, size: tuple) -> None:
    """One plain convolution with a zero-padded kernel in place of pad + convolution, on even
    sides; odd sides take the original path. Either way the output is TF's."""
    from timm.layers.conv2d_same import Conv2dSame

    torch.manual_seed(kernel * groups)
    conv = Conv2dSame(8, 8, kernel, stride=2, groups=groups, bias=True).eval()
    fast = EvenSameConv(conv).eval()
    x = torch.randn(2, 8, *size)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), atol=1e-5, rtol=1e-5)
    if kernel % 2:  # an odd kernel pads one more at the bottom right: a zero first row and column
        assert fast.fast.kernel_size == (kernel + 1, kernel + 1) or kernel == 1
        assert (fast.fast.weight[:, :, 0] == 0).all() or kernel == 1


def test_vectors_are_unit_norm_with_model_dim(model: LiteEmbedder) -> None:
    img = model.encode_pil([_sample("coffee.png"), Image.new("RGB", (90, 60), "red")])
    txt = model.encode_texts(["a cup of coffee", "a dog running on a beach with a ball"])
    assert model.model_id == "vtsearch-lite"
    assert img.vectors.shape == (2, model.dim)
    assert txt.vectors.shape == (2, model.dim)
    assert img.tokens.shape == (2, 49, 1280)
    assert txt.states.shape[:2] == txt.mask.shape and txt.states.shape[-1] == 384
    torch.testing.assert_close(img.vectors.norm(dim=-1), torch.ones(2), atol=1e-4, rtol=0)


def test_captions_score_as_before_the_concept_branch_and_labels_read_it(model: LiteEmbedder):
    """Image vectors are ``[sqrt(a) heads, sqrt(1-a) ConSE, sqrt(c) concepts] / sqrt(1+c)``; a
    caption is ``sqrt(1+c) [sqrt(a) heads, sqrt(1-a) ConSE, 0]`` (so its score is the one
    without the branch) and a label ``sqrt(1+c) [la/sqrt(a) heads, 0, (1-la)/sqrt(c) mpnet]``
    (so ``la cos(heads) + (1-la) cos(concepts)``), each part a unit vector; a label made of common
    caption words ("a dog") is scored as a caption."""
    cfg = model.heads.config
    assert cfg.concept_dim == 768 and model.dim == 1920 and "dog" in cfg.caption_words
    a, c, la, spread = (
        cfg.alpha,
        cfg.concept_weight,
        cfg.label_alpha,
        (1 + cfg.concept_weight) ** 0.5,
    )
    hd = cfg.members * cfg.out_dim
    img = model.encode_pil([_sample("coffee.png")]).vectors[0]
    caption, label, common = model.encode_texts(
        ["a dog running on a beach with a ball", "a photo of a tulip", "a dog"]
    ).vectors

    def norms(v: torch.Tensor) -> list[float]:
        return [float(v[:hd].norm()), float(v[hd:-768].norm()), float(v[-768:].norm())]

    want = {
        "image": [a**0.5 / spread, (1 - a) ** 0.5 / spread, c**0.5 / spread],
        "caption": [spread * a**0.5, spread * (1 - a) ** 0.5, 0.0],
        "label": [spread * la / a**0.5, 0.0, spread * (1 - la) / c**0.5],
    }
    for name, v in (("image", img), ("caption", caption), ("common", common), ("label", label)):
        expected = want["caption" if name == "common" else name]
        assert norms(v) == pytest.approx(expected, abs=1e-4), name


def test_text_queries_find_their_sample_photo(model: LiteEmbedder) -> None:
    queries = list(PHOTOS)
    images = model.encode_pil([_sample(PHOTOS[q]) for q in queries]).vectors
    texts = model.encode_texts(queries).vectors
    best = (texts @ images.T).argmax(dim=1).tolist()
    for i, q in enumerate(queries[:4]):  # the astronaut is only a distractor
        assert best[i] == i, f"{q!r} ranked {PHOTOS[queries[best[i]]]} first"


def test_training_writes_loadable_weights(tmp_path: Path) -> None:
    from vtsearch.training.train_biencoder import build_heads

    gen = torch.Generator().manual_seed(0)
    n = 48
    # Synthetic pairs: each image feature and its five captions share a latent code.
    latent = torch.randn(n, 16, generator=gen)
    pooled = latent @ torch.randn(16, 1280, generator=gen) + 0.1 * torch.randn(n, 1280)
    text = latent.repeat_interleave(5, 0) @ torch.randn(16, 384, generator=gen)
    text = torch.nn.functional.normalize(text + 0.1 * torch.randn(5 * n, 384), dim=-1)
    split = {"pooled": pooled, "text": text, "logits": torch.randn(n, 1000, generator=gen)}
    config = LiteConfig(hidden=32, out_dim=8, members=2, topk=3, text_topk=2)
    class_emb = torch.nn.functional.normalize(torch.randn(1000, 384, generator=gen), dim=-1)
    heads, metrics = build_heads(
        split, split, config=config, class_emb=class_emb, epochs=3, batch_size=16
    )
    assert 0.0 <= metrics["t2i_R@10"] <= 100.0

    path = tmp_path / "w.safetensors"
    save_heads(heads, path)
    loaded = load_heads(path)
    assert loaded.config == config
    vec = loaded.image_vectors(pooled[:4], split["logits"][:4])
    assert vec.shape == (4, config.dim)
    torch.testing.assert_close(
        vec, heads.image_vectors(pooled[:4], split["logits"][:4]), atol=5e-3, rtol=0
    )
