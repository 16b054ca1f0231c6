"""A real, throw-away PostgreSQL server for the catalog tests: Debian's ``postgresql`` binaries
(``.ci/run`` installs them), a fresh data folder, a free localhost port, trust logins for local
connections only. PostgreSQL refuses to run as root: as root the server runs as the ``postgres``
user (or ``nobody``)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them out of ``PATH``)."""
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]) if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``start()`` it, ``database(name)`` for a fresh database's URL, ``stop()`` when done."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="vtsearch-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: tuple[int, int] | None = None
        if os.geteuid() == 0:
            name = "postgres" if _has_user("postgres") else "nobody"
            pw = pwd.getpwnam(name)
            self.user = (pw.pw_uid, pw.pw_gid)
            os.chown(self.root, *self.user)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        kwargs: dict = {"capture_output": True, "text": True, "cwd": self.root, "timeout": 120}
        if self.user is not None:
            kwargs.update(user=self.user[0], group=self.user[1], extra_groups=[])
        return subprocess.run([str(self.bin / args[0]), *args[1:]], check=False, **kwargs)

    def start(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "vtsearch", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--locale=C.UTF-8",
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "start",
        )  # fmt: skip
        if done.returncode:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log[-500:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://vtsearch@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """A new empty database's URL. Its collation is a language's (ICU en-US) where the
        server has ICU, as most installations' databases are: paths must still sort bytewise
        where the catalog selects folders by range."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=vtsearch dbname=postgres", autocommit=True
        ) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            try:
                con.execute(
                    f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                    "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                )
            except psycopg.Error:
                con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
