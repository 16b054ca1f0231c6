"""Bad option values and queries that cannot mean anything: click's usage errors (exit 2) that
name the option, a QueryError that says why, and nothing written to the collection."""

import pytest
from click.testing import CliRunner

from vtsearch.api import Engine
from vtsearch.cli import main
from vtsearch.errors import QueryError


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--batch-size", -3], "--batch-size"),
        (["--batch-size", 0], "--batch-size"),
        (["--max-size-mb", -1], "--max-size-mb"),
        (["--max-size-mb", 0], "--max-size-mb"),
        (["--workers", -1], "--workers"),
    ],
)
def test_bad_index_options_are_usage_errors_that_touch_nothing(tmp_path, photos, args, option):
    db = tmp_path / "coll"
    r = run("--db", db, "index", photos, *args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output
    assert not db.exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["a cat", "-n", 0], "'-n' / '--limit'"),
        (["a cat", "--limit", -2], "'-n' / '--limit'"),
        (["a cat", "--rerank-k", 0], "'--rerank-k'"),
    ],
)
def test_bad_query_options_name_the_option(tmp_path, args, option):
    # Refused before any collection is looked at (there is none here).
    r = run("--db", tmp_path / "coll", "query", *args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for {option}" in r.output
    assert "k must be" not in r.output  # the API's name, not the option's
    assert not (tmp_path / "coll").exists()


@pytest.mark.parametrize(
    ("args", "option"), [(["--limit", 0], "--limit"), (["--rerank-k", 0], "--rerank-k")]
)
def test_bad_eval_options_name_the_option(tmp_path, args, option):
    caps = tmp_path / "caps.tsv"
    caps.write_text("img0.png\ta photo\n")
    r = run("eval", "--captions", caps, "--images", tmp_path, *args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output


def test_terms_that_cancel_out_are_refused(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    assert run("--db", db, "--model", tiny_clip, "index", photos, "--workers", 0).exit_code == 0

    with Engine(db) as eng:
        with pytest.raises(QueryError, match="cancel out"):
            eng.search(text="a cat - a cat")
        with pytest.raises(QueryError, match="cancel out"):
            eng.search(text="a cat^2 - a cat - a cat")
        assert len(eng.search(text="a cat - a cat^0.5", k=3)) == 3  # half left: a direction
        assert len(eng.search(text="a cat - a cat", image=photos / "img0.png", k=3)) == 3

    r = run("--db", db, "query", "a cat - a cat")
    assert r.exit_code == 2
    assert r.output.startswith("Error: the terms of 'a cat - a cat' cancel out")
    assert len(r.output.strip().splitlines()) == 1
