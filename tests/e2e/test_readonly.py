"""A collection its user may read but not write: `status` and `query` work and change nothing in
the collection folder, `index` is refused with a one-line error naming the collection. Checked
as an unprivileged user (root writes every file whatever its mode), with and without the -wal
and -shm files of a writer that still has the catalog open."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NOBODY, make_photo

from vtsearch import Engine


def unprivileged_prefix(folder: Path, env: dict) -> list[str]:
    """The command prefix that runs Python as a user that file modes bind: none when this user is
    not root, else ``nobody``; skip where privileges cannot be dropped."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    elif shutil.which("runuser"):
        prefix = ["runuser", "-u", "nobody", "--"]
    else:
        pytest.skip("root writes every file, and neither setpriv nor runuser can drop privileges")
    probe = "import os, sys, vtsearch.cli; os.listdir(sys.argv[1]); print(os.geteuid())"
    r = subprocess.run(
        [*prefix, sys.executable, "-c", probe, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    if r.returncode != 0 or r.stdout.strip() == "0":
        pytest.skip(f"cannot run as an unprivileged user here: {r.stderr.strip()[-300:]}")
    return prefix


def listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Name -> (size, mtime, mode) of the folder and everything in it."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in (folder, *folder.rglob("*"))
    }


@pytest.mark.parametrize("writer_open", [False, True], ids=["closed", "writer-open"])
def test_read_only_collection_answers_status_and_queries_and_refuses_index(
    open_folder, tiny_clip, writer_open
):
    model, photos, db = open_folder / "model", open_folder / "photos", open_folder / "coll"
    shutil.copytree(tiny_clip, model)
    for i in range(4):
        make_photo(photos / f"p{i}.png", seed=i)
    for path in (model, photos, *model.rglob("*"), *photos.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # save_pretrained writes some files 0600
    home = open_folder / "home"  # the unprivileged user's home and model cache
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HOME": str(home),
        "VTSEARCH_CACHE": str(home / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    prefix = unprivileged_prefix(open_folder, env)

    eng = Engine(db, model=str(model))
    eng.index(photos, workers=0)
    if writer_open:
        # The writer keeps its connections: SQLite keeps catalog.db-wal (holding what it wrote)
        # and catalog.db-shm.
        assert (db / "catalog.db-wal").stat().st_size and (db / "catalog.db-shm").exists()
    else:
        eng.close()
        assert not (db / "catalog.db-wal").exists()
    # No write bit for anyone (chmod a-w), or, run as another user, root's usual modes.
    file_mode, dir_mode = (0o644, 0o755) if prefix and writer_open else (0o444, 0o555)
    for path in db.iterdir():
        path.chmod(file_mode)
    db.chmod(dir_mode)
    before = listing(db)

    def vtsearch(*args: str) -> subprocess.CompletedProcess:
        cmd = [*prefix, sys.executable, "-m", "vtsearch.cli", "--db", str(db), *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=open_folder, timeout=120
        )

    try:
        plain = vtsearch("status")
        status = vtsearch("status", "--json")
        query = vtsearch("--model", str(model), "query", "a photo", "-n", "3", "--json")
        index = vtsearch("--model", str(model), "index", str(photos))
    finally:
        after = listing(db)
        db.chmod(0o755)
        eng.close()

    assert plain.returncode == 0 and "indexed:    4" in plain.stdout, plain.stderr[-2000:]
    assert "(read-only for you)" in plain.stdout
    assert status.returncode == 0, status.stderr[-2000:]
    st = json.loads(status.stdout)
    assert st["counts"]["indexed"] == 4
    assert query.returncode == 0, query.stderr[-2000:]
    hits = [json.loads(line) for line in query.stdout.splitlines()]
    assert len(hits) == 3 and {h["path"] for h in hits} <= {str(p) for p in photos.iterdir()}
    assert index.returncode != 0
    lines = index.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), index.stderr[-2000:]
    assert str(db) in lines[0] and "Traceback" not in index.stderr + index.stdout
    assert after == before, "a read-only user changed the collection folder"
    assert st["readonly"] is True
