"""Cold start: the text towers' TorchScript traces, and a query process that never imports
transformers, torchvision or torch._dynamo once the traces exist."""

import os
import subprocess
import sys

import torch
from conftest import SAMPLES

from vtsearch.models.towers import TextTower

TEXTS = ["a dog", "two children play on the beach near a red boat", "Straße, café ✓", "x " * 300]


def test_traced_tower_gives_transformers_own_states(tmp_path):
    built = TextTower(traced_dir=tmp_path)  # no trace yet: transformers runs and traces
    assert built.traced is None and len(list(tmp_path.glob("minilm-*.pt"))) == 1
    loaded = TextTower(traced_dir=tmp_path)
    assert loaded.traced is not None and loaded.net is None
    for texts in (TEXTS, TEXTS[:1]):
        want, got = built(texts), loaded(texts)
        for a, b in zip(want, got, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=1e-5)


def test_a_damaged_trace_is_replaced(tmp_path):
    TextTower(traced_dir=tmp_path)
    (file,) = tmp_path.glob("minilm-*.pt")
    file.write_bytes(b"not a trace")
    again = TextTower(traced_dir=tmp_path)
    assert again.traced is None and again.net is not None  # fell back, and traced anew
    assert TextTower(traced_dir=tmp_path).traced is not None


def test_a_query_process_imports_no_transformers(tmp_path):
    env = {**os.environ, "VTSEARCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    db = tmp_path / "coll"
    cli = [sys.executable, "-m", "vtsearch.cli", "--db", str(db)]
    subprocess.run([*cli, "index", str(SAMPLES)], env=env, check=True, capture_output=True)
    probe = (
        "import sys; from vtsearch.cli import main\n"
        f"sys.argv = ['vtsearch', '--db', {str(db)!r}, 'query', 'a raccoon', '-n', '1', "
        "'--no-rerank']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('transformers', 'torchvision', 'torch._dynamo') "
        "if m in sys.modules))\n"
    )
    # "a raccoon" is a label: the first query also unpacks and traces the concept encoder.
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
        )
    first, modules = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert first.endswith("raccoon.jpg"), out.stdout
    assert modules == "[]", out.stdout
    assert len(list((tmp_path / "cache").glob("all-mpnet-base-v2-*.pt"))) == 1
