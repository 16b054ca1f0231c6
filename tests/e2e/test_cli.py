"""The CLI through click's CliRunner: exit codes, messages, JSON."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vtsearch.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_index_query_status(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    r = run("--db", db, "--model", tiny_clip, "index", photos, "--workers", 0)
    assert r.exit_code == 0, r.output
    assert "7 embedded" in r.output and "0 failed" in r.output

    r = run("--db", db, "query", "--image", photos / "img3.png", "-n", 2, "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 2 and rows[0]["path"].endswith("img3.png")
    assert rows[0]["score"] >= rows[1]["score"]

    r = run("--db", db, "query", "a red square", "--limit", 3)
    assert r.exit_code == 0 and len(r.output.splitlines()) == 3

    r = run("--db", db, "status")
    assert r.exit_code == 0 and "indexed:    7" in r.output and tiny_clip in r.output
    st = json.loads(run("--db", db, "status", "--json").output)
    assert st["counts"] == {"indexed": 7, "texts": 0}


def test_errors_are_one_line_with_exit_code(tmp_path, photos, tiny_clip, tiny_siglip):
    db = tmp_path / "coll"
    r = run("--db", db, "query", "a cat")
    assert r.exit_code == 4 and r.output.startswith("Error: no collection")
    assert len(r.output.strip().splitlines()) == 1

    run("--db", db, "--model", tiny_clip, "index", photos, "--workers", 0)
    r = run("--db", db, "--model", tiny_siglip, "query", "a cat")
    assert r.exit_code == 3 and "indexed with model" in r.output

    r = run("--db", db, "query", "   ")
    assert r.exit_code == 2 and "empty" in r.output
    (tmp_path / "x.jpg").write_text("not an image")
    r = run("--db", db, "query", "--image", tmp_path / "x.jpg")
    assert r.exit_code == 2 and "cannot read query image" in r.output
    r = run("--db", db, "--model", str(tmp_path / "no-such-model"), "index", photos)
    assert r.exit_code == 2 and "--model DIR" in r.output


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_commands(main)], ids=lambda p: " ".join(p) or "main")
def test_every_command_has_help_with_an_example(path):
    r = run(*path, "--help")
    assert r.exit_code == 0
    assert "Example" in r.output


def test_help_does_not_import_torch():
    code = (
        "import sys; from vtsearch.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_texts_add_and_image_to_text_query(tmp_path, photos, tiny_clip):
    db = tmp_path / "coll"
    run("--db", db, "--model", tiny_clip, "index", photos, "--workers", 0)
    captions = tmp_path / "captions.txt"
    captions.write_text("img0.png\ta red square\nimg1.png\ta blue circle\n\na green field\n")
    r = run("--db", db, "texts", "add", captions)
    assert r.exit_code == 0 and "3 texts added" in r.output
    r = run("--db", db, "texts", "add", captions)
    assert "0 texts added" in r.output  # duplicates are skipped

    r = run("--db", db, "query", "--image", photos / "img0.png", "--texts", "--json")
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert r.exit_code == 0 and len(rows) == 3
    assert {x["text"] for x in rows} == {"a red square", "a blue circle", "a green field"}
    # Text -> text through the same index: a stored text is its own best match.
    r = run("--db", db, "query", "a blue circle", "--texts", "-n", 1)
    assert r.output.split("\t")[1].strip() == "a blue circle"

    assert json.loads(run("--db", db, "status", "--json").output)["counts"]["texts"] == 3
    r = run("--db", db, "texts", "remove", "--source", str(captions))
    assert "3 texts removed" in r.output
    r = run("--db", db, "query", "--image", photos / "img0.png", "--texts")
    assert r.exit_code == 2 and "texts add" in r.output


def test_eval_prints_recall_for_both_directions(tmp_path, photos, tiny_clip):
    caps = tmp_path / "caps.tsv"
    caps.write_text(
        "image\tcaption\n"
        + "".join(f"img{i}.png\tphoto number {i}\nimg{i}.png\tpicture {i}\n" for i in range(6))
    )
    r = run("--model", tiny_clip, "eval", "--captions", caps, "--images", photos, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert (rep["images"], rep["captions"]) == (6, 12)
    for d in ("text_to_image", "image_to_text"):
        m = rep[d]["bi"]
        assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] == 100.0  # 6 images: all within 10
        assert rep[d]["rerank"] is None  # CLIP has no fusion scorer
    r = run("--model", tiny_clip, "eval", "--captions", caps, "--images", photos, "--limit", 3)
    assert r.exit_code == 0 and "3 images, 6 captions" in r.output and "text->image" in r.output


def test_eval_without_rerank_k_uses_the_depth_queries_use(tmp_path):
    from conftest import SAMPLES, save_random_scorer

    from vtsearch.search.rerank import FusionReranker

    scorer = save_random_scorer(tmp_path, rerank_k=7)  # a depth no default has
    assert FusionReranker.load(scorer).default_k == 7  # what a query with it uses
    args = ["--reranker", scorer, "eval", "--captions", SAMPLES / "captions.txt"]
    args += ["--images", SAMPLES, "--limit", 3]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("3 images, 3 captions, re-rank depth 7\n")
    rep = json.loads(run(*args, "--json").output)
    assert rep["rerank_k"] == 7 and rep["text_to_image"]["rerank"] is not None
    assert "re-rank depth 4" in run(*args, "--rerank-k", 4).output


def test_help_states_the_one_default_depth(tmp_path):
    from tiny_models import save_tiny_blip

    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.rerank import DEFAULT_RERANK_K, FusionReranker, default_weights

    shipped = FusionReranker.load(default_weights("vtsearch-lite"))
    assert shipped.default_k == DEFAULT_RERANK_K == 10
    assert BlipReranker(str(save_tiny_blip(tmp_path / "blip"))).default_k == DEFAULT_RERANK_K
    for cmd in ("query", "eval"):
        text = " ".join(run(cmd, "--help").output.split())
        assert f"{DEFAULT_RERANK_K} for the shipped scorer" in text
        assert "re-ranker's own" in text and "default 50" not in text
