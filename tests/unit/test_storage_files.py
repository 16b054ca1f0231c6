"""Collection files on real file systems: a full disk (a small tmpfs, mounted in a private mount
namespace), the umask, denied access (checked as an unprivileged user, since root reads every
file) and a read-only mount. A full disk and a denied access must be one-line typed errors that
name the file, never a SIGBUS or a traceback, and must leave what was stored readable."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import NOBODY
from tmpfs import PRELUDE, run_on_tmpfs

from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex


def test_full_disk_is_a_typed_error_and_the_next_run_resumes(tmp_path):
    r = run_on_tmpfs(
        tmp_path,
        """
        cache = TokenCache(root / "coll", 4, 256)
        old = np.random.default_rng(0).standard_normal((8, 4, 256)).astype(np.float32)
        cache.put(np.arange(8), old)
        size = cache.path.stat().st_size
        fill(root / "filler")
        new = np.ones((1, 4, 256), np.float32)
        # Slot 499 needs about 0.5 MB more: more than the full tmpfs has.
        attempt("put", lambda: cache.put(np.array([499]), new))
        print("size kept:", cache.path.stat().st_size == size)
        again = TokenCache.open_existing(root / "coll")
        got = again.get(np.arange(8))
        print("old records:", all(np.abs(g - o).max() < 0.05 for g, o in zip(got, old)))
        os.unlink(root / "filler")
        again.put(np.array([499]), new)
        print("resumed:", np.allclose(again.get(np.array([499]))[0], 1.0, atol=0.01))
        """,
    )
    bus = (-signal.SIGBUS, 128 + signal.SIGBUS)  # killed, or its shell's report of it
    assert r.returncode not in bus, "killed by SIGBUS: the map was written on a full disk"
    assert r.returncode == 0, r.stderr
    tokens_bin = tmp_path / "tmpfs" / "coll" / "tokens.bin"
    assert f"put DiskFullError: disk full: cannot grow {tokens_bin} by " in r.stdout, r.stdout
    assert "free); free some space and run the same command again" in r.stdout
    assert "size kept: True" in r.stdout
    assert "old records: True" in r.stdout
    assert "resumed: True" in r.stdout


def test_full_disk_under_sqlite_is_a_typed_error(tmp_path):
    r = run_on_tmpfs(
        tmp_path,
        """
        import sqlite3
        import sqlalchemy as sa

        db = root / "catalog.db"
        con = sqlite3.connect(db)
        con.execute("create table t (x blob)")
        con.commit()
        fill(root / "filler")

        def insert_sqlite3():
            with os_errors(db, "write"):
                con.execute("insert into t values (?)", (bytes(200_000),))
                con.commit()

        def insert_sqlalchemy():
            engine = sa.create_engine(f"sqlite:///{db}")
            try:
                with os_errors(db, "write"), engine.begin() as c:
                    c.execute(sa.text("insert into t values (:x)"), {"x": bytes(200_000)})
            finally:
                engine.dispose()

        attempt("sqlite3", insert_sqlite3)
        con.rollback()
        attempt("sqlalchemy", insert_sqlalchemy)
        """,
    )
    assert r.returncode == 0, r.stderr
    db = tmp_path / "tmpfs" / "catalog.db"
    for label in ("sqlite3", "sqlalchemy"):
        assert f"{label} DiskFullError: disk full: cannot write {db} (" in r.stdout, r.stdout


def test_read_only_file_system_is_a_typed_error(tmp_path):
    r = run_on_tmpfs(
        tmp_path,
        """
        import sqlite3

        db = root / "catalog.db"
        con = sqlite3.connect(db)
        con.execute("create table t (x)")
        con.commit()
        con.close()
        cache = TokenCache(root, 4, 8)
        cache.put(np.arange(2), np.ones((2, 4, 8), np.float32))
        del cache
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)

        def insert():
            con = sqlite3.connect(db)
            try:
                with os_errors(db, "write"):
                    con.execute("insert into t values (1)")
                    con.commit()
            finally:
                con.close()

        cache = TokenCache.open_existing(root)
        attempt("sqlite", insert)
        attempt("put", lambda: cache.put(np.array([0]), np.zeros((1, 4, 8), np.float32)))
        attempt("save", lambda: VectorIndex(4).save(root))
        """,
    )
    assert r.returncode == 0, r.stderr
    root = tmp_path / "tmpfs"
    out = r.stdout
    assert f"sqlite CollectionPermissionError: cannot write {root / 'catalog.db'}: " in out, out
    assert f"put CollectionPermissionError: cannot write {root / 'tokens.bin'}: read-only" in out
    assert f"save CollectionPermissionError: cannot write {root / 'vectors.faiss'}: read-" in out


def test_collection_files_follow_the_umask(tmp_path):
    for umask, mode in ((0o002, 0o664), (0o077, 0o600)):
        folder = tmp_path / f"umask{umask:o}"
        old = os.umask(umask)
        try:
            cache = TokenCache(folder, 4, 8)
            cache.put(np.arange(2), np.ones((2, 4, 8), np.float32))
            cache.reconcile(1, np.zeros(0, np.int64), seq=3)  # replaces tokens.json
            VectorIndex(4).save(folder)
        finally:
            os.umask(old)
        for name in ("tokens.json", "tokens.bin", "vectors.faiss", "vectors.json"):
            assert stat.S_IMODE((folder / name).stat().st_mode) == mode, (oct(umask), name)


# -- denied access, as a user that file modes apply to --------------------------------------------


def run_unprivileged(folder: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``PRELUDE + script`` with ``root = folder`` as a user that file modes bind: this user
    if it is not root, else ``nobody``; skip where privileges cannot be dropped."""
    if os.geteuid() != 0:
        prefix: list[str] = []
    elif shutil.which("setpriv"):
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    elif shutil.which("runuser"):
        prefix = ["runuser", "-u", "nobody", "--"]
    else:
        pytest.skip("root reads every file, and neither setpriv nor runuser can drop privileges")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = "import os, sys, vtsearch.storage.tokens; os.listdir(sys.argv[1]); print(os.geteuid())"
    r = subprocess.run(
        [*prefix, sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, env=env
    )
    if r.returncode != 0 or r.stdout.strip() == "0":
        pytest.skip(f"cannot run as an unprivileged user here: {r.stderr.strip()[-300:]}")
    code = PRELUDE + textwrap.dedent(script)
    cmd = [*prefix, sys.executable, "-c", code, str(folder)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_unreadable_files_are_typed_errors_naming_them(open_folder):
    tokens, vectors = open_folder / "tokens", open_folder / "vectors"
    TokenCache(tokens, 4, 8).put(np.arange(2), np.ones((2, 4, 8), np.float32))
    vi = VectorIndex(4)
    vi.add(np.array([7]), np.eye(4, dtype=np.float32)[:1])
    vi.save(vectors)
    for path in (*tokens.iterdir(), *vectors.iterdir()):
        path.chmod(0o644)
    tokens.chmod(0o755)
    vectors.chmod(0o755)
    (tokens / "tokens.json").chmod(0)
    (vectors / "vectors.faiss").chmod(0)
    r = run_unprivileged(
        open_folder,
        """
        attempt("tokens", lambda: TokenCache.open_existing(root / "tokens"))
        attempt("vectors", lambda: VectorIndex.load(root / "vectors", 4))
        """,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    json_path, faiss_path = tokens / "tokens.json", vectors / "vectors.faiss"
    assert f"tokens CollectionPermissionError: cannot read {json_path}: permission denied;" in out
    assert f"vectors CollectionPermissionError: cannot read {faiss_path}: permission denied" in out
    assert "chmod g+r" in out and "--db" in out
    assert len(out.splitlines()) == 2  # one line each


def test_unwritable_files_are_typed_errors_naming_them(open_folder):
    coll = open_folder / "coll"
    TokenCache(coll, 4, 8).put(np.arange(2), np.ones((2, 4, 8), np.float32))
    VectorIndex(4).save(coll)
    for path in coll.iterdir():
        path.chmod(0o444)
    coll.chmod(0o555)
    r = run_unprivileged(
        open_folder,
        """
        coll = root / "coll"
        cache = TokenCache.open_existing(coll)
        one = np.ones((1, 4, 8), np.float32)
        attempt("put", lambda: cache.put(np.array([1]), one))
        attempt("grow", lambda: cache.put(np.array([50]), one))
        attempt("reconcile", lambda: cache.reconcile(1, np.zeros(0, np.int64), seq=9))
        attempt("new cache", lambda: TokenCache(coll, 4, 16))
        attempt("save", lambda: VectorIndex(4).save(coll))
        print("kept:", np.allclose(cache.get(np.array([1]))[0], 1.0, atol=0.01))
        """,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    denied = "permission denied; ask the collection's owner to make it and its folder writable"
    for label, name in (
        ("put", "tokens.bin"),
        ("grow", "tokens.bin"),
        ("reconcile", "tokens.json"),
        ("new cache", "tokens.bin"),
        ("save", "vectors.faiss"),
    ):
        assert f"{label} CollectionPermissionError: cannot write {coll / name}: {denied}" in out, (
            label,
            out,
        )
    assert "kept: True" in out
