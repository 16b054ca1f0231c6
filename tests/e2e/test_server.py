"""`vtsearch serve`'s HTTP API through FastAPI's TestClient, over a real Engine: the sample photos
indexed with the default model (session fixture ``lite``), and folders of generated photos."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLES, make_photo
from fastapi.testclient import TestClient
from PIL import Image

from vtsearch import Engine
from vtsearch.cli import main
from vtsearch.server.app import create_app
from vtsearch.server.security import CSP

RESULT_KEYS = {
    "id",
    "path",
    "root",
    "score",
    "bi_score",
    "rerank_score",
    "prior",
    "width",
    "height",
    "taken_at",
    "thumb",
    "file",
}
N_SAMPLES = 19


@pytest.fixture(scope="module")
def samples(tmp_path_factory, lite):
    """The sample photos (a copy: tests plant files beside them), indexed, with their captions
    as the text set; yields (engine, photo folder)."""
    base = tmp_path_factory.mktemp("server")
    photos = base / "photos"
    shutil.copytree(SAMPLES, photos)
    eng = Engine(base / "coll", embedder=lite)
    report = eng.index(photos, workers=0)
    assert report.embedded == N_SAMPLES and not report.failed
    lines = [ln.split("\t") for ln in (SAMPLES / "captions.txt").read_text().splitlines()]
    eng.add_texts([c for _, c in lines], source="captions")
    yield eng, photos.resolve()
    eng.close()


@pytest.fixture(scope="module")
def client(samples):
    return TestClient(create_app(samples[0]))


@pytest.fixture(scope="module")
def ids(client):
    """Image id by file name."""
    hits = client.get("/api/search", params={"q": "a photo", "k": 50}).json()["results"]
    return {h["path"]: h["id"] for h in hits}


def _error(r, status: int) -> str:
    """The one-line message of an error response, after checking its shape."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def _generated(folder: Path, n: int, size=(64, 48)) -> Path:
    for i in range(n):
        make_photo(folder / f"p{i:03d}.png", seed=1000 + i, size=size)
    return folder


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


# -- search ---------------------------------------------------------------------------------------
def test_text_search_finds_the_cat_first_in_the_contracts_shape(client, samples):
    r = client.get("/api/search", params={"q": "a cat", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert (body["query"], body["k"], body["offset"], body["has_more"]) == ("a cat", 5, 0, True)
    results = body["results"]
    assert len(results) == 5 and set(results[0]) == RESULT_KEYS
    top = results[0]
    assert top["path"] == "cat_chelsea.png" and top["root"] == str(samples[1])
    assert top["thumb"] == f"/api/images/{top['id']}/thumb"
    assert top["file"] == f"/api/images/{top['id']}/file"
    assert (top["width"], top["height"], top["taken_at"]) == (451, 300, None)
    # Re-ranked: each score is the bi-encoder's, less the prior, plus the scorer's share.
    assert all(isinstance(h[f], float) for h in results for f in ("score", "bi_score", "prior"))
    plain = client.get("/api/search", params={"q": "a cat", "k": 5, "rerank": "false"}).json()
    assert all(h["rerank_score"] is None and h["score"] == h["bi_score"] for h in plain["results"])


def test_pages_are_disjoint_and_add_up_to_the_whole_ranking(client):
    whole = client.get("/api/search", params={"q": "a red flower", "k": 50}).json()
    assert len(whole["results"]) == N_SAMPLES and whole["has_more"] is False
    pages = [
        client.get("/api/search", params={"q": "a red flower", "k": 5, "offset": o}).json()
        for o in (0, 5, 10, 15)
    ]
    got = [h["id"] for p in pages for h in p["results"]]
    assert len(got) == len(set(got)) == N_SAMPLES
    # The same ranking, re-ranked head included, whatever the page size.
    assert got == [h["id"] for h in whole["results"]]
    assert [p["has_more"] for p in pages] == [True, True, True, False]
    assert len(pages[-1]["results"]) == 4
    beyond = client.get("/api/search", params={"q": "a red flower", "k": 5, "offset": 40})
    assert beyond.json()["results"] == [] and beyond.json()["has_more"] is False


def test_image_upload_search_finds_the_photo_and_mixes_with_text(client):
    cat = (SAMPLES / "cat_chelsea.png").read_bytes()
    r = client.post("/api/search", files={"image": ("cat.png", cat, "image/png")}, data={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] is None and body["results"][0]["path"] == "cat_chelsea.png"
    # A JPEG of another photo, with a text and a page offset as form fields.
    buf = io.BytesIO()
    Image.open(SAMPLES / "coffee_cup.jpg").save(buf, "JPEG")
    r = client.post(
        "/api/search",
        files={"image": ("x.jpg", buf.getvalue(), "image/jpeg")},
        data={"q": "a cup", "k": 2, "offset": 0},
    )
    assert r.status_code == 200 and r.json()["results"][0]["path"] == "coffee_cup.jpg"
    r = client.post("/api/search", data={"q": "a cat", "k": 1})  # text alone, as a form
    assert r.json()["results"][0]["path"] == "cat_chelsea.png"


def test_similar_leaves_the_image_itself_out(client, ids):
    cat = ids["cat_chelsea.png"]
    r = client.get(f"/api/similar/{cat}", params={"k": 50})
    assert r.status_code == 200
    got = [h["id"] for h in r.json()["results"]]
    assert cat not in got and sorted(got) == sorted(i for i in ids.values() if i != cat)
    first = client.get(f"/api/similar/{cat}", params={"k": 3}).json()
    second = client.get(f"/api/similar/{cat}", params={"k": 3, "offset": 3}).json()
    assert [h["id"] for h in first["results"] + second["results"]] == got[:6]
    assert "no indexed image" in _error(client.get("/api/similar/987654"), 404)


def test_image_metadata(client, ids, samples):
    cat = ids["cat_chelsea.png"]
    info = client.get(f"/api/images/{cat}").json()
    assert set(info) == RESULT_KEYS | {"format", "bytes", "name", "tags"}
    assert (info["name"], info["format"], info["width"], info["height"]) == (
        "cat_chelsea.png",
        "PNG",
        451,
        300,
    )
    assert info["bytes"] == (samples[1] / "cat_chelsea.png").stat().st_size
    assert all(info[f] is None for f in ("score", "bi_score", "rerank_score", "prior"))
    _error(client.get("/api/images/987654"), 404)


def test_status(client, samples):
    st = client.get("/api/status").json()
    assert set(st) == {
        "path",
        "model_id",
        "index_kind",
        "indexed",
        "failed",
        "texts",
        "readonly",
        "roots",
        "fusion",
        "can_index",
    }
    assert (st["model_id"], st["indexed"], st["failed"], st["texts"]) == (
        "vtsearch-lite",
        N_SAMPLES,
        0,
        N_SAMPLES,
    )
    assert st["roots"] == [{"path": str(samples[1]), "exists": True, "images": N_SAMPLES}]
    assert (st["fusion"], st["can_index"], st["readonly"]) == (True, False, False)


# -- files and thumbnails -------------------------------------------------------------------------
def test_file_is_the_original_and_only_found_by_id(client, ids, samples):
    cat = ids["cat_chelsea.png"]
    r = client.get(f"/api/images/{cat}/file")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (samples[1] / "cat_chelsea.png").read_bytes()
    attempts = [
        "/api/images/..%2f..%2fetc%2fpasswd/file",
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
        "/api/images/%2e%2e/file",
        "/api/images/%2fetc%2fpasswd/file",
        "/api/images//etc/passwd/file",
        f"/api/images/{samples[1] / 'cat_chelsea.png'}/file",
        "/api/images/abc/file",
        "/api/images/1.5/file",
        "/api/images/-1/file",
        "/api/images/0/file",
        "/api/images/99999999999999999999999999/file",
        "/api/images/987654/file",
    ]
    for url in attempts:
        r = client.get(url)
        assert r.status_code in (400, 404, 422), (url, r.status_code)
        assert "root:" not in r.text and "error" in r.json(), url


def test_a_file_turned_into_a_link_out_of_its_folder_is_refused(tmp_path, lite):
    photos = _generated(tmp_path / "photos", 3)
    outside = make_photo(tmp_path / "elsewhere" / "secret.png", seed=7)
    eng = Engine(tmp_path / "coll", embedder=lite)
    eng.index(photos, workers=0)
    client = TestClient(create_app(eng))
    ids = {Path(h.path).name: h.id for h in eng.search(text="a photo", k=9, rerank=False)}
    assert set(ids) == {"p000.png", "p001.png", "p002.png"}
    # Inside the folder a link is fine: it resolves to a file in the folder.
    (photos / "p001.png").unlink()
    (photos / "p001.png").symlink_to(photos / "p002.png")
    assert client.get(f"/api/images/{ids['p001.png']}/file").status_code == 200
    # A link out of the folder is refused, though the catalog row still names the path.
    (photos / "p000.png").unlink()
    (photos / "p000.png").symlink_to(outside)
    assert "outside" in _error(client.get(f"/api/images/{ids['p000.png']}/file"), 404)
    _error(client.get(f"/api/images/{ids['p000.png']}/thumb"), 404)
    (photos / "p002.png").unlink()  # gone: no file to serve
    _error(client.get(f"/api/images/{ids['p002.png']}/file"), 404)


def test_thumbnail_is_cached_on_disk_and_served_from_there(client, ids, samples):
    eng = samples[0]
    raccoon = ids["raccoon.jpg"]
    sha = eng._parts.catalog(False).rows([raccoon])[raccoon].sha256
    cached = eng.path / "thumbs" / f"{raccoon}-{sha[:16]}.jpg"
    assert not cached.exists()
    r = client.get(f"/api/images/{raccoon}/thumb")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "no-cache" in r.headers["cache-control"]  # kept, but asked again: 304 if unchanged
    again = client.get(f"/api/images/{raccoon}/thumb", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 256
    assert cached.read_bytes() == r.content
    # The second request is served from the file: plant other bytes there and they come back.
    planted = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(planted, "JPEG")
    cached.write_bytes(planted.getvalue())
    assert client.get(f"/api/images/{raccoon}/thumb").content == planted.getvalue()
    cached.unlink()


def test_thumbnails_of_rows_that_went_are_removed(tmp_path, lite):
    photos = _generated(tmp_path / "photos", 3)
    eng = Engine(tmp_path / "coll", embedder=lite)
    eng.index(photos, workers=0)
    client = TestClient(create_app(eng, folder=photos))
    thumbs = eng.path / "thumbs"
    for i in (1, 2, 3):
        assert client.get(f"/api/images/{i}/thumb").status_code == 200
    names = lambda: sorted(p.name.split("-")[0] for p in thumbs.iterdir())  # noqa: E731
    assert names() == ["1", "2", "3"]
    gone = eng.image(2).path
    Path(gone).unlink()
    assert client.post("/api/index").status_code == 202
    assert _wait_for_index(client)["state"] == "done"
    assert names() == ["1", "3"]
    # Lazily too: the thumbnail of an id that names no image goes when it is asked for.
    (thumbs / "77-0123456789abcdef.jpg").write_bytes(b"stale")
    _error(client.get("/api/images/77/thumb"), 404)
    assert names() == ["1", "3"]


def test_an_id_reused_after_a_restore_never_shows_the_old_thumbnail(tmp_path, lite):
    """A catalog restored from a backup gives new rows ids its lost history used: a thumbnail is
    named by id and content, so the new image never shows the old one's."""
    import shutil
    import sqlite3

    photos = _generated(tmp_path / "photos", 2)
    db = tmp_path / "coll"
    first = Engine(db, embedder=lite)
    first.index(photos, workers=0)
    first.close()
    backup = tmp_path / "backup.db"
    shutil.copy(db / "catalog.db", backup)  # closed: the last connection checkpointed the log
    extra = _generated(tmp_path / "more", 1)
    shutil.copy(next(extra.iterdir()), photos / "third.png")
    eng = Engine(db, embedder=lite)
    eng.index(photos, workers=0)
    old = TestClient(create_app(eng)).get("/api/images/3/thumb").content
    eng.close()
    # Restored through SQLite's backup API: safe whatever connections are still open.
    src, dst = sqlite3.connect(backup), sqlite3.connect(db / "catalog.db")
    src.backup(dst)
    src.close()
    dst.close()
    (photos / "third.png").unlink()
    make = _generated(tmp_path / "other", 3)
    shutil.copy(sorted(make.iterdir())[-1], photos / "fourth.png")
    eng = Engine(db, embedder=lite)
    eng.index(photos, workers=0)
    assert eng.image(3).name == "fourth.png"  # the id the lost history gave third.png
    fresh = TestClient(create_app(eng)).get("/api/images/3/thumb").content
    assert fresh != old


def test_a_read_only_collection_makes_thumbnails_in_memory(tmp_path, lite):
    from vtsearch.search.gallery import Gallery
    from vtsearch.storage.catalog import Catalog

    eng = Engine(tmp_path / "coll", embedder=lite)
    eng.index(_generated(tmp_path / "photos", 1), workers=0)
    eng.close()
    gallery = Gallery(eng.path, Catalog.open(eng.path, readonly=True))
    assert Image.open(io.BytesIO(gallery.thumbnail(1))).format == "JPEG"
    assert not (eng.path / "thumbs").exists()


# -- uploads --------------------------------------------------------------------------------------
def test_uploads_over_the_limits_or_not_images_are_refused(client):
    def post(data: bytes, name="x.png"):
        return client.post("/api/search", files={"image": (name, data, "image/png")})

    assert "image is larger" in _error(post(b"\0" * (20 * 2**20 + 1)), 413)  # the image limit
    # A Content-Length past the request limit is refused before the body is read.
    assert "request is larger" in _error(post(b"\0" * (30 * 2**20)), 413)
    _error(post(b"hello, this is text"), 415)
    _error(post((SAMPLES / "captions.txt").read_bytes(), "captions.png"), 415)
    _error(post(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), 415)  # EPS: refused
    assert "bomb" in _error(post(_png_declaring(12_000, 12_000)), 413)  # our pixel limit
    # A query upload has a lower limit than an indexed file: 8000 x 6000 is indexable, but a
    # server decoding many of them at once would run out of memory.
    assert "limit of 40,000,000" in _error(post(_png_declaring(8_000, 6_000)), 413)
    assert "bomb" in _error(post(_png_declaring(40_000, 40_000)), 413)  # Pillow's own limit
    _error(post(b""), 400)


def test_a_chunked_body_is_cut_off_at_the_limit(client):
    boundary = "vtsearchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def body():
        yield head
        for _ in range(30):
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/api/search",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert "request is larger" in _error(r, 413)  # cut off by the body limit, not by the route


# -- explain --------------------------------------------------------------------------------------
def test_explain_words_weights_and_attention(client, ids):
    cat = ids["cat_chelsea.png"]
    r = client.get("/api/explain", params={"q": "a cat", "id": cat})
    assert r.status_code == 200, r.text
    ex = r.json()
    assert (ex["id"], ex["query"], ex["grid"]) == (cat, "a cat", [7, 7])
    words = ex["words"]
    assert [w["word"] for w in words] == ["a", "cat"]
    for w in words:
        att = np.array(w["attention"])
        assert att.shape == (7, 7) and att.sum() == pytest.approx(1.0, abs=1e-4)
        assert (att >= 0).all() and -1.0 <= w["match"] <= 1.0
    assert sum(w["weight"] for w in words) == pytest.approx(1.0, abs=1e-5)
    whole = sum(w["weight"] * np.array(w["attention"]) for w in words)
    np.testing.assert_allclose(np.array(ex["attention"]), whole, atol=1e-5)
    # The pooling weights come from the text alone (MiniLM states through weights trained on
    # Flickr8k's captions): function words carry no visual evidence, so training turned them
    # down. Whatever the picture, "cat" outweighs "a", and in a longer query every content word
    # outweighs every function word.
    by_word = {w["word"]: w["weight"] for w in words}
    assert by_word["cat"] > 2 * by_word["a"]
    long = client.get("/api/explain", params={"q": "a raccoon in the grass", "id": cat}).json()
    weight = {w["word"]: w["weight"] for w in long["words"]}
    assert min(weight["raccoon"], weight["grass"]) > max(weight["a"], weight["in"], weight["the"])
    # The explained score is the re-ranker's own: gain * sum(weight * match), as the search that
    # put the cat first computed it from the same cached region tokens.
    hit = next(
        h
        for h in client.get("/api/search", params={"q": "a cat", "k": 5}).json()["results"]
        if h["id"] == cat
    )
    assert ex["score"] == pytest.approx(hit["rerank_score"], abs=1e-3)
    assert ex["gain"] * sum(w["weight"] * w["match"] for w in words) == pytest.approx(
        ex["score"], abs=1e-4
    )
    # The model sees the centred square of the 451x300 photo.
    assert ex["area"] == pytest.approx([75.5 / 451, 0.0, 375.5 / 451, 1.0])


def test_explain_joins_word_pieces_and_uses_the_strongest_term(client, ids):
    ex = client.get(
        "/api/explain", params={"q": "dogs - a skateboarder^2", "id": ids["cat_chelsea.png"]}
    ).json()
    # The term explained is the strongest positive one; "skateboarder" is three WordPieces.
    assert ex["term"] == "dogs"
    ex = client.get(
        "/api/explain", params={"q": "a skateboarder", "id": ids["cat_chelsea.png"]}
    ).json()
    assert [w["word"] for w in ex["words"]] == ["a", "skateboarder"]
    assert sum(w["weight"] for w in ex["words"]) == pytest.approx(1.0, abs=1e-5)


def test_explain_without_a_fusion_scorer_is_404(samples, lite):
    eng = Engine(samples[0].path, embedder=lite, reranker="none")
    client = TestClient(create_app(eng))
    r = client.get("/api/explain", params={"q": "a cat", "id": 1})
    assert "no fusion scorer" in _error(r, 404)
    assert client.get("/api/status").json()["fusion"] is False


def test_explain_of_an_unknown_image_is_404(client):
    _error(client.get("/api/explain", params={"q": "a cat", "id": 987654}), 404)


# -- texts ----------------------------------------------------------------------------------------
def test_texts_for_an_indexed_image_or_a_text(client, ids, tmp_path, lite):
    own = dict(ln.split("\t") for ln in (SAMPLES / "captions.txt").read_text().splitlines())
    r = client.get("/api/texts/search", params={"id": ids["coffee_cup.jpg"], "k": 3})
    assert r.status_code == 200
    hits = r.json()["results"]
    assert len(hits) == 3 and hits[0]["text"] == own["coffee_cup.jpg"]
    assert set(hits[0]) == {"id", "text", "score", "source", "bi_score", "rerank_score", "prior"}
    assert hits[0]["source"] == "captions"
    hits = client.get("/api/texts/search", params={"q": own["raccoon.jpg"], "k": 1}).json()
    assert hits["results"][0]["text"] == own["raccoon.jpg"]  # a stored text is its own best match
    _error(client.get("/api/texts/search"), 400)
    _error(client.get("/api/texts/search", params={"id": 987654}), 404)
    # A collection without texts says so.
    eng = Engine(tmp_path / "coll", embedder=lite)
    eng.index(_generated(tmp_path / "photos", 1), workers=0)
    bare = TestClient(create_app(eng))
    assert "no texts" in _error(bare.get("/api/texts/search", params={"id": 1}), 404)


# -- errors ---------------------------------------------------------------------------------------
def test_malformed_requests_get_json_errors(client):
    assert "k" in _error(client.get("/api/search", params={"q": "a cat", "k": -1}), 400)
    assert "k" in _error(client.get("/api/search", params={"q": "a cat", "k": "abc"}), 400)
    _error(client.get("/api/search", params={"q": "a cat", "k": 10_000}), 400)
    _error(client.get("/api/search", params={"q": "a cat", "offset": -3}), 400)
    _error(client.get("/api/search", params={"q": "a cat", "rerank": "maybe"}), 400)
    assert "q" in _error(client.get("/api/search"), 422)
    _error(client.get("/api/search", params={"q": ""}), 400)
    _error(client.get("/api/search", params={"q": "   "}), 400)
    _error(client.get("/api/search", params={"q": "- people"}), 400)
    assert "image" in _error(client.post("/api/search"), 400)
    _error(client.post("/api/search", data={"k": "abc", "q": "x"}), 400)
    junk = {"content": b"{not multipart", "headers": {"content-type": "text/plain"}}
    _error(client.post("/api/search", **junk), 400)
    _error(client.get("/api/explain", params={"q": "a cat"}), 422)
    assert "no such route" in _error(client.get("/api/nothing/here"), 404)
    _error(client.get("/nothing"), 404)
    _error(client.get("/static/nothing.js"), 404)
    _error(client.delete("/api/search"), 405)


def test_an_unexpected_failure_is_500_without_details(samples, monkeypatch):
    client = TestClient(create_app(samples[0]), raise_server_exceptions=False)

    def broken(*_a, **_k):
        raise RuntimeError("secret detail /etc/shadow")

    monkeypatch.setattr(samples[0], "status", broken)
    r = client.get("/api/status")
    assert _error(r, 500) == "internal error" and "secret" not in r.text


# -- the page, headers, token ---------------------------------------------------------------------
def test_page_and_static_files_carry_the_security_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
    for url in ("/", "/api/status", "/static/index.html", "/api/nothing"):
        assert client.get(url).headers["x-content-type-options"] == "nosniff", url
    # No CORS unless asked for.
    r = client.get("/api/status", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    docs = json.loads(client.get("/openapi.json").text)
    assert docs["info"]["title"] == "vtsearch"
    assert {"/api/search", "/api/explain", "/api/images/{image_id}/file"} <= set(docs["paths"])
    page = client.get("/docs")
    assert page.status_code == 200
    # The viewer's scripts come from this server, never from a CDN: /docs works offline.
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn." not in page.text
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "SwaggerUIBundle" in js.text
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/favicon.ico").status_code == 204  # asked for by browsers: no 404


def test_cors_only_for_the_origin_given(samples):
    client = TestClient(create_app(samples[0], cors="http://localhost:3000"))
    r = client.get("/api/status", headers={"origin": "http://localhost:3000"})
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    r = client.get("/api/status", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_a_token_guards_every_route_and_the_cookie_flow(samples, ids):
    token = "s3cret token/;="
    app = create_app(samples[0], token=token)
    client = TestClient(app)
    thumb = f"/api/images/{ids['cat_chelsea.png']}/thumb"
    for url in ("/api/status", "/api/search?q=cat", thumb, "/", "/static/index.html"):
        assert "token" in _error(client.get(url), 401), url
        assert client.get(url).headers["www-authenticate"] == "Bearer"
    assert client.get("/favicon.ico").status_code == 204  # the one path without the token
    _error(client.get("/api/status", headers={"authorization": "Bearer wrong"}), 401)
    _error(client.get("/api/status", headers={"authorization": f"Basic {token}"}), 401)
    ok = client.get("/api/status", headers={"authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    _error(client.get("/api/status", headers={"cookie": "vtsearch_token=s3cret"}), 401)
    _error(client.get("/", params={"token": "wrong"}), 401)

    r = client.get("/", params={"token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "vtsearch_token=" in cookie and "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower() and token not in cookie
    # The client keeps the cookie: the page, its thumbnails and the API now answer.
    assert client.get("/").status_code == 200
    assert client.get(thumb).status_code == 200
    assert client.get("/api/search", params={"q": "a cat", "k": 1}).status_code == 200


# -- indexing from the server ---------------------------------------------------------------------
def _wait_for_index(client, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/api/index").json()
        if state["state"] != "running":
            return state
        time.sleep(0.05)
    raise AssertionError("the index run did not finish")


def test_queries_answer_while_the_server_indexes(tmp_path, lite, monkeypatch):
    """60 generated photos, one commit per image: a query issued at any moment of the run
    answers 200 with the images committed so far."""
    monkeypatch.setenv("VTSEARCH_COMMIT_IMAGES", "1")
    monkeypatch.setenv("VTSEARCH_CHECKPOINT_SECONDS", "0")
    photos = _generated(tmp_path / "photos", 5)
    eng = Engine(tmp_path / "coll", embedder=lite)
    client = TestClient(create_app(eng, folder=photos))
    empty = client.get("/api/status").json()  # nothing indexed yet: an empty collection
    assert (empty["indexed"], empty["roots"], empty["can_index"]) == (0, [], True)
    eng.index(photos, workers=0)
    for i in range(5, 60):
        make_photo(photos / f"p{i:03d}.png", seed=1000 + i)
    assert client.get("/api/index").json()["state"] == "idle"

    r = client.post("/api/index")
    assert r.status_code == 202 and r.json()["state"] == "running"
    assert "already" in _error(client.post("/api/index"), 409)
    statuses, counts, phases = [], [], set()
    while (state := client.get("/api/index").json())["state"] == "running":
        phases.add(state["phase"])
        r = client.get("/api/search", params={"q": "a colourful pattern", "k": 100})
        statuses.append(r.status_code)
        counts.append(len(r.json()["results"]))
    assert state["state"] == "done", state
    assert state["report"]["embedded"] == 55 and state["report"]["unchanged"] == 5
    assert state["report"]["failed"] == [] and state["error"] is None
    assert (state["done"], state["total"], state["phase"]) == (55, 55, None)
    assert len(statuses) >= 3 and set(statuses) == {200}
    assert counts == sorted(counts) and any(5 < c < 60 for c in counts)  # committed, growing
    assert "embedding" in phases
    final = client.get("/api/search", params={"q": "a colourful pattern", "k": 100}).json()
    assert len(final["results"]) == 60
    assert client.get("/api/status").json()["indexed"] == 60


def test_index_without_a_folder_is_refused(client):
    assert "--folder" in _error(client.post("/api/index"), 409)
    assert client.get("/api/index").json()["state"] == "idle"


# -- the command ----------------------------------------------------------------------------------
def test_serve_refuses_other_hosts_without_a_token(tmp_path, monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("VTSEARCH_TOKEN", raising=False)
    run = CliRunner().invoke
    db = ["--db", str(tmp_path / "coll")]
    r = run(main, [*db, "serve", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "--token" in r.output and not calls
    r = run(main, [*db, "serve", "--host", "192.168.1.5", "--token", ""])
    assert r.exit_code != 0 and not calls
    r = run(main, [*db, "serve", "--host", "0.0.0.0", "--token", "t", "--port", "9001"])
    assert r.exit_code == 0, r.output
    assert calls[-1]["host"] == "0.0.0.0" and calls[-1]["port"] == 9001
    r = run(main, [*db, "serve"], env={"VTSEARCH_TOKEN": ""})
    assert r.exit_code == 0 and calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8765
    r = run(main, [*db, "serve", "--host", "::1"])
    assert r.exit_code == 0  # this machine only
    r = run(main, [*db, "serve", "--host", "0.0.0.0"], env={"VTSEARCH_TOKEN": "t"})
    assert r.exit_code == 0


def test_help_imports_no_web_framework():
    code = (
        "import sys; from vtsearch.cli import main\n"
        "try: main(['serve', '--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_other_sites_pages_are_kept_out_of_a_server_without_token(samples):
    """DNS rebinding: a page elsewhere makes its own name resolve to 127.0.0.1; its requests
    carry that name as Host. Cross-site POSTs (a form on another page) carry their Origin."""
    app = create_app(samples[0], hosts=frozenset({"127.0.0.1", "localhost", "::1"}))
    rebound = TestClient(app, base_url="http://attacker.example:8765")
    for path in ("/api/status", "/api/search?q=cat", "/"):
        assert "answers requests for" in _error(rebound.get(path), 400)
    local = TestClient(app, base_url="http://127.0.0.1:8765")
    assert local.get("/api/status").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8765").get("/api/status").status_code == 200
    for headers in (
        {"origin": "http://evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"origin": "http://127.0.0.1:9999"},  # another local port is another site too
    ):
        r = local.post("/api/index", headers=headers)
        assert "another site" in _error(r, 403)
    # The page's own requests pass (here: no --folder, so re-indexing is refused as such).
    same = {"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"}
    assert local.post("/api/index", headers=same).status_code == 409
    cat = local.post("/api/search", data={"q": "a cat"}, headers=same)
    assert cat.status_code == 200 and cat.json()["results"][0]["path"] == "cat_chelsea.png"
