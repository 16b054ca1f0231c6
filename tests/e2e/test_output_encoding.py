"""`vtsearch query` output stays valid and usable: a file name that is not UTF-8 comes out as its
own bytes (plain) or as strict JSON with its exact bytes in ``path_b64``, and a score that is not
a number is JSON null, never ``-Infinity``."""

import base64
import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from vtsearch.cli import main
from vtsearch.search.results import Result, TextResult

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
NOT_UTF8 = b"caf\xe9.jpg"  # Latin-1 "café.jpg": not valid UTF-8


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def strict_json(line: str) -> dict:
    """What a strict parser accepts: no NaN/Infinity, no lone surrogates in any string."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    row = json.loads(line, parse_constant=refuse)
    for v in row.values():
        if isinstance(v, str):
            v.encode("utf-8")  # raises on a lone surrogate
    return row


def _folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in names:
        shutil.copy(SAMPLES / n, folder / n)
    return folder


def test_a_path_that_is_not_utf8_comes_out_exact(tmp_path):
    folder = _folder(tmp_path, ["cat_chelsea.png", "coffee_cup.jpg"])
    odd = os.path.join(os.fsencode(folder), NOT_UTF8)
    shutil.copy(os.fsencode(SAMPLES / "raccoon.jpg"), odd)
    db = tmp_path / "coll"
    r = run("--db", db, "index", folder, "--workers", 0)
    assert r.exit_code == 0 and "3 embedded" in r.output, r.output
    # The catalog keeps the resolved folder.
    exact = os.path.join(os.fsencode(os.path.realpath(folder)), NOT_UTF8)

    r = run("--db", db, "query", "a raccoon", "-n", 3)
    assert r.exit_code == 0, r.output
    lines = r.stdout_bytes.splitlines()
    assert len(lines) == 3
    assert sum(line.split(b"\t", 1)[1] == exact for line in lines) == 1  # the file's own bytes

    r = run("--db", db, "query", "a raccoon", "-n", 3, "--json")
    assert r.exit_code == 0, r.output
    rows = [strict_json(line) for line in r.stdout_bytes.decode("utf-8").splitlines()]
    odd_rows = [row for row in rows if "path_b64" in row]
    assert len(rows) == 3 and len(odd_rows) == 1  # path_b64 only where the path is not UTF-8
    assert base64.b64decode(odd_rows[0]["path_b64"]) == exact
    assert odd_rows[0]["path"].endswith("caf\ufffd.jpg")  # readable, marked where bytes were lost


def test_a_missing_file_under_blip_is_null_in_strict_json(tmp_path):
    from tiny_models import save_tiny_blip

    folder = _folder(tmp_path, ["cat_chelsea.png", "coffee_cup.jpg"])
    db = tmp_path / "coll"
    assert run("--db", db, "index", folder, "--workers", 0).exit_code == 0
    (folder / "coffee_cup.jpg").unlink()  # gone since indexing: BLIP scores it -inf
    blip = save_tiny_blip(tmp_path / "blip")

    r = run("--db", db, "--reranker", blip, "query", "a cup", "-n", 2, "--json")
    assert r.exit_code == 0, r.output
    rows = {Path(row["path"]).name: row for row in map(strict_json, r.output.splitlines())}
    gone, there = rows["coffee_cup.jpg"], rows["cat_chelsea.png"]
    assert gone["score"] is None and gone["rerank_score"] is None
    assert isinstance(gone["bi_score"], float)
    assert isinstance(there["score"], float) and isinstance(there["rerank_score"], float)


def test_to_dict_is_strict_json_for_any_score():
    inf, nan = float("inf"), float("nan")
    r = Result(1, "/photos/a.jpg", -inf, bi_score=0.3, rerank_score=-inf, prior=nan)
    d = r.to_dict()
    assert (d["score"], d["bi_score"], d["rerank_score"], d["prior"]) == (None, 0.3, None, None)
    assert "path_b64" not in d
    json.dumps(d, allow_nan=False)
    t = TextResult(2, "a cat", inf, bi_score=nan, rerank_score=1.5).to_dict()
    assert (t["score"], t["bi_score"], t["rerank_score"]) == (None, None, 1.5)
    json.dumps(t, allow_nan=False)


def test_to_dict_carries_the_exact_bytes_of_a_path_that_is_not_utf8():
    raw = b"/photos/\xff\xfe/caf\xe9.jpg"
    d = Result(1, os.fsdecode(raw), 0.5).to_dict()
    assert d["path"] == "/photos/\ufffd\ufffd/caf\ufffd.jpg"
    assert base64.b64decode(d["path_b64"]) == raw
    strict_json(json.dumps(d, allow_nan=False))
