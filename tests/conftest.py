"""Shared fixtures: tiny real models saved to disk, generated photos, an isolated home folder."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def lite():
    """The shipped default model, loaded once for the whole session."""
    from vtsearch.models.registry import load_embedder

    return load_embedder("vtsearch-lite", device="cpu")


def save_random_scorer(folder: Path, rerank_k: int, fit_rows: int = 300) -> str:
    """A randomly initialised fusion scorer of the default model's token shape, saved with one
    mixing weight for both directions and no query bank: re-ranking plumbing without trained
    weights."""
    import torch

    from vtsearch.models.fusion import FusionConfig, FusionScorer, save_fusion

    torch.manual_seed(0)
    scorer = FusionScorer(FusionConfig(init_sharpness=5.0))
    scorer.reducer.fit(torch.randn(fit_rows, 1280))
    path = folder / "fusion.safetensors"
    save_fusion(scorer, path, extra={"mix": 0.05, "rerank_k": rerank_k})
    return str(path)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTSEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VTSEARCH_MODEL", raising=False)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip", "clip"))


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-siglip", "siglip"))


def make_photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A distinct noisy gradient image; different seeds give clearly different pictures."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = base + rng.integers(-60, 60, size=(h, w, 3)) + (xx[..., None] * rng.integers(1, 4, 3))
    arr = np.clip(arr + yy[..., None], 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i in range(6):
        make_photo(folder / f"img{i}.png", seed=i)
    make_photo(folder / "sub" / "deep.jpg", seed=99)
    return folder


#: The uid tests that need file modes to apply run as (root reads every file).
NOBODY = 65534


@pytest.fixture
def open_folder():
    """A folder every user may enter (pytest's own temp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="vtsearch-open-"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server started for this test session (see ``tests/pgserver.py``)."""
    from pgserver import PgServer, bin_dir

    if bin_dir() is None:
        pytest.skip(
            "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs "
            "it where it may)"
        )
    server = PgServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request) -> str:
    """A fresh empty PostgreSQL database for one test."""
    import re

    return pg_server.database(re.sub(r"\W", "_", request.node.name)[:50].lower())


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request) -> str | None:
    """Run a test on each catalog backend: None (the folder's SQLite file) or a PostgreSQL URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


def ray_cluster():
    """A local Ray cluster of 2 CPUs for one test module (a module fixture yields from it);
    one this process already joined is left running."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
