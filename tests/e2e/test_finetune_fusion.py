"""`vtsearch train fusion --captions`: fine-tuning the scorer on a user's own captioned pictures."""

import json

import torch
from click.testing import CliRunner
from conftest import SAMPLES

from vtsearch.cli import main
from vtsearch.models.fusion import (
    FusionConfig,
    FusionScorer,
    attach_heads,
    load_fusion,
    save_fusion,
)
from vtsearch.models.lite import load_heads


def test_finetune_on_a_captioned_folder_writes_a_usable_scorer(tmp_path):
    torch.manual_seed(0)
    base = FusionScorer(FusionConfig())
    base.reducer.fit(torch.randn(300, 1280))
    attach_heads(base, load_heads())
    base_path = tmp_path / "base.safetensors"
    bank = torch.nn.functional.normalize(torch.randn(64, load_heads().config.dim), dim=1)
    settings = {"mix": 0.05, "alpha": 0.5, "beta": 20.0}
    off = {"mix": 0.0, "alpha": 0.8, "beta": 20.0}  # as shipped: image->text by the prior alone
    save_fusion(
        base,
        base_path,
        extra={"rerank_k": 10, "t2i": settings, "i2t": off},
        tensors={"bank.texts": bank, "bank.images": bank},
    )
    # Two captions per photo, and one line naming a file that is not there (skipped).
    lines = [ln.split("\t") for ln in (SAMPLES / "captions.txt").read_text().splitlines()]
    caps = tmp_path / "captions.tsv"
    caps.write_text(
        "".join(f"{n}\t{c}\n{n}\ta photo: {c}\n" for n, c in lines) + "missing.jpg\ta ghost\n"
    )
    out = tmp_path / "mine.safetensors"
    args = ["train", "fusion", "--captions", caps, "--images", SAMPLES, "--base", base_path]
    r = CliRunner().invoke(main, [str(a) for a in [*args, "--out", out, "--epochs", 2]])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert metrics["held_out"] is False and "t2i_rerank_r1" in metrics
    tuned, extra, tensors = load_fusion(out)
    assert set(tensors) == {"bank.texts", "bank.images"} and extra["t2i"]["beta"] == 20.0
    assert extra["t2i"]["mix"] > 0 and extra["i2t"]["mix"] == 0.0
    assert abs(extra["i2t"]["alpha"] - 0.8) < 1e-6
    # Fine-tuning moved the trained parts away from the base's zero-initialised ones, and left
    # the bi-encoder's heads alone.
    assert tuned.word_weight.weight.abs().sum() > 0
    assert not torch.equal(tuned.log_gain, base.log_gain)
    for name, value in base.state_dict().items():
        if name.startswith(FusionScorer.FROZEN):
            torch.testing.assert_close(tuned.state_dict()[name], value, atol=1e-2, rtol=1e-2)

    db = tmp_path / "coll"
    r = CliRunner().invoke(main, ["--db", str(db), "--reranker", str(out), "index", str(SAMPLES)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main, ["--db", str(db), "--reranker", str(out), "query", "a cat", "--json", "-n", "3"]
    )
    assert r.exit_code == 0, r.output
    hits = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(hits) == 3 and all(h["rerank_score"] is not None for h in hits)


def test_train_fusion_needs_one_source():
    r = CliRunner().invoke(main, ["train", "fusion"])
    assert r.exit_code == 2 and "--flickr" in r.output and "--captions" in r.output
