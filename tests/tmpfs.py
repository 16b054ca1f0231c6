"""A small, full-able file system for tests: a tmpfs mounted in a private mount namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Run by the subprocesses before their own lines: fill the disk of a path to the last page.
PRELUDE = """
import errno, os, subprocess, sys
from pathlib import Path
import numpy as np
from vtsearch.errors import CollectionPermissionError, DiskFullError
from vtsearch.storage.files import os_errors
from vtsearch.storage.tokens import TokenCache
from vtsearch.storage.vectors import VectorIndex

root = Path(sys.argv[1])

def fill(path):
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(bytes(chunk))
            except OSError as e:
                assert e.errno == errno.ENOSPC, e

def attempt(label, fn):
    try:
        fn()
        print(label, "no error")
    except Exception as e:
        print(label, f"{type(e).__name__}: {e}")
"""

#: The shell around the script: exit 97 when the tmpfs cannot be mounted. ``exec``, so that a
#: signal that kills Python is the return code (-7 for SIGBUS), not the shell's 128 + 7.
TMPFS_SHELL = 'mount -t tmpfs -o size={size} tmpfs "$1" || exit 97; exec "$2" -c "$3" "$1"'
#: Ways to mount a tmpfs, tried in order: a user namespace needs no real root.
TMPFS_RUNNERS = (["unshare", "-rm"], ["unshare", "-m"])


def run_on_tmpfs(tmp_path: Path, script: str, size: str = "1m") -> subprocess.CompletedProcess:
    """Run ``PRELUDE + script`` with ``root`` on a fresh tmpfs of ``size``; skip if none can be
    mounted here."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    shell = TMPFS_SHELL.format(size=size)
    code = PRELUDE + textwrap.dedent(script)
    tried = []
    for runner in TMPFS_RUNNERS:
        if shutil.which(runner[0]) is None:
            continue
        cmd = [*runner, "sh", "-c", shell, "sh", str(mount_point), sys.executable, code]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 97 and "unshare failed" not in r.stderr:
            return r
        tried.append(f"{' '.join(runner)}: {r.stderr.strip()}")
    if os.geteuid() == 0:
        # Root without unshare: mount in this namespace and unmount after.
        shell = shell.replace("exec ", "") + '; rc=$?; umount "$1"; exit $rc'
        cmd = ["sh", "-c", shell, "sh", str(mount_point)]
        r = subprocess.run([*cmd, sys.executable, code], capture_output=True, text=True)
        if r.returncode != 97:
            return r
        tried.append(f"mount: {r.stderr.strip()}")
    pytest.skip(f"cannot mount a small tmpfs to fill ({'; '.join(tried) or 'no unshare'})")
