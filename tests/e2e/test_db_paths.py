"""`--db` folders whose names hold characters that mean something in a URL (``?``, ``%``, ``#``,
a space): the catalog lands in exactly that folder, and status and queries find it there."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vtsearch.cli import main
from vtsearch.storage.catalog import Catalog

NAMES = ("coll?x", "a%41b", "sp ace#h")


def test_db_paths_with_url_characters(tmp_path, photos, tiny_clip):
    parent = tmp_path / "dbs"
    parent.mkdir()
    runner = CliRunner()
    for name in NAMES:
        db = parent / name
        base = ["--db", str(db), "--model", tiny_clip]
        r = runner.invoke(main, [*base, "index", str(photos), "--workers", "0"])
        assert r.exit_code == 0, (name, r.output, r.exception)
        assert (db / "catalog.db").is_file(), name
        st = runner.invoke(main, [*base, "status", "--json"])
        assert st.exit_code == 0, (name, st.output)
        assert json.loads(st.output)["counts"]["indexed"] == 7, name
        q = runner.invoke(main, [*base, "query", "a photo", "-n", "3", "--json"])
        assert q.exit_code == 0, (name, q.output)
        assert len([json.loads(line) for line in q.output.splitlines()]) == 3, name
        # A reader that opens the catalog read-only builds an SQLite URI from the path.
        catalog = Catalog.open(db, readonly=True)
        try:
            assert catalog.counts()["indexed"] == 7, name
        finally:
            catalog.close()
    # Nothing beside the three folders: no database under a name cut at ``?`` or ``#``.
    assert sorted(p.name for p in parent.iterdir()) == sorted(NAMES)
