"""The web page of `vtsearch serve`, used the way a person uses it: in a real headless Chromium.

A real `vtsearch serve` subprocess serves the sample photos (indexed with the default model,
tagged, with one duplicate planted);
Playwright drives Debian's `chromium` (never a downloaded browser). Each step saves a screenshot
under the test's tmp_path. Skips when chromium or the playwright package is missing; CI installs
both (`.ci/run`, the `dev` extra).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import SAMPLES

from vtsearch import Engine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no `chromium` on PATH: apt-get install chromium (.ci/run does) to run the browser test",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install -e '.[dev]'"
)
expect = sync_api.expect

TIMEOUT_MS = 20_000  # the first query on a cold server loads the re-ranker
#: The 19 samples and a byte copy of raccoon.jpg.
N_PHOTOS = 20
#: Zero-shot tags for the collection: cat_chelsea.png's first is "cat", rocket_launch.jpg's
#: "rocket" (tests/e2e/test_tags.py).
LABELS = "cat,rocket,coins,coffee,flower,raccoon,astronaut"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def serve(db: Path, *options: str, token: str | None = None):
    """A `vtsearch serve` subprocess on a free localhost port, answering; yields its base URL."""
    port = _free_port()
    log_path = db.parent / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(db), "serve", "--port", str(port)]
    cmd += [*options, *(["--token", token] if token else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vtsearch serve exited {proc.returncode}:\n{log_path.read_text()}")
            try:
                _get_json(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"vtsearch serve did not answer in 60 s:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The sample photos and copies/raccoon.jpg, a byte copy made now: the newer file, so the
    original is the one to keep."""
    photos = tmp_path_factory.mktemp("web") / "photos"
    shutil.copytree(SAMPLES, photos)  # file times kept
    (photos / "copies").mkdir()
    shutil.copy(SAMPLES / "raccoon.jpg", photos / "copies" / "raccoon.jpg")
    return photos


@pytest.fixture(scope="module")
def collection(folder, lite) -> Path:
    """The photos indexed with the default model and tagged."""
    db = folder.parent / "coll"
    with Engine(db, embedder=lite) as eng:
        report = eng.index(folder, workers=0)
        eng.tag(LABELS)
    assert report.failed == [] and report.embedded == N_PHOTOS
    return db


@pytest.fixture(scope="module")
def server(collection, folder):
    # --folder: the page's re-index button indexes the photos again.
    with serve(collection, "--folder", str(folder)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A fresh browser page that records console errors and saves numbered screenshots."""

    def __init__(self, browser, base: str, shots: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.base = base
        self.shots = shots
        self.n = 0
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )

    def shot(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(self.shots / f"{self.n:02d}-{name}.png"))

    def search(self, text: str) -> None:
        q = self.page.locator("#q")
        q.fill(text)
        q.press("Enter")

    def tile_names(self) -> list[str]:
        return self.page.locator("#grid .tile img").evaluate_all("els => els.map(e => e.alt)")

    def expect_first(self, name: str) -> None:
        first = self.page.locator("#grid .tile img").first
        expect(first).to_have_attribute("alt", name)
        # The thumbnail really arrived (not a broken image).
        first.evaluate("img => img.decode()")
        assert first.evaluate("img => img.naturalWidth") > 0

    def tile_ids(self) -> list[int]:
        return self.page.locator("#grid .tile").evaluate_all(
            "els => els.map(e => Number(e.dataset.id))"
        )

    def tab_to(self, target, limit: int = 40) -> None:
        """Press Tab until ``target`` (a locator) has the focus, as a keyboard user would."""
        for _ in range(limit):
            if target.evaluate("e => e === document.activeElement"):
                return
            self.page.keyboard.press("Tab")
        pytest.fail(f"{limit} presses of Tab never reached {target}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def web(browser, server, tmp_path):
    page = Page(browser, server, tmp_path)
    yield page
    page.close()
    # Content-Security-Policy violations, failed requests and script errors all land here.
    assert page.errors == [], page.errors


def canvas_coverage(page) -> float:
    """The fraction of the heatmap canvas's pixels that are not fully transparent."""
    return page.locator("#heatmap").evaluate(
        """c => {
            if (c.hidden || !c.width || !c.height) return 0;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
            return n / (c.width * c.height);
        }"""
    )


def test_text_search_large_view_similar_and_why(web):
    page = web.page
    page.goto(web.base + "/")
    expect(page.locator("#q")).to_be_focused()
    expect(page.locator("#status")).to_contain_text(f"{N_PHOTOS} photos")
    web.shot("start")

    # A text search: the cat first, the query in the address.
    web.search("a cat")
    page.wait_for_url("**/?q=a+cat")
    web.expect_first("cat_chelsea.png")
    expect(page.locator("#summary")).to_contain_text("a cat")
    web.shot("search")

    # Reloading the address runs the same search.
    page.reload()
    web.expect_first("cat_chelsea.png")
    expect(page.locator("#q")).to_have_value("a cat")
    cat_grid = web.tile_names()
    assert len(cat_grid) == N_PHOTOS

    # The large view with its metadata; right and left walk the results.
    page.locator("#grid .tile").first.click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#meta-name")).to_have_text("cat_chelsea.png")
    meta = page.locator("#meta")
    expect(meta).to_contain_text("451 × 300")
    expect(meta).to_contain_text("PNG")  # format and file size come from /api/images/{id}
    expect(meta).to_contain_text("cat_chelsea.png")
    page.locator("#viewer-img").evaluate("img => img.decode()")
    web.shot("large-view")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#position")).to_have_text(f"2 / {N_PHOTOS}")
    expect(page.locator("#meta-name")).to_have_text(cat_grid[1])
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#meta-name")).to_have_text("cat_chelsea.png")

    # More like this: a new grid, the photo's id in the address.
    page.locator("#more-like-this").click()
    page.wait_for_url("**/?similar=*")
    expect(viewer).to_be_hidden()
    expect(page.locator("#summary")).to_contain_text("like")
    page.wait_for_function(
        "before => [...document.querySelectorAll('#grid .tile img')].map(i => i.alt).join() "
        "!== before && document.querySelectorAll('#grid .tile').length > 0",
        arg=",".join(cat_grid),
    )
    assert web.tile_names() != cat_grid
    web.shot("more-like-this")

    # Back to the cat search; open the cat from the keyboard and ask why.
    page.go_back()
    page.wait_for_url("**/?q=a+cat")
    web.expect_first("cat_chelsea.png")
    page.locator("#grid .tile").first.focus()
    page.keyboard.press("Enter")
    expect(viewer).to_be_visible()
    expect(page.locator("#meta-name")).to_have_text("cat_chelsea.png")
    page.locator("#why").click()
    expect(page.locator('#words button[data-word="cat"]')).to_be_visible()
    expect(page.locator("#heatmap")).to_be_visible()
    assert canvas_coverage(page) > 0.05
    web.shot("why")
    whole = page.locator("#heatmap").evaluate("c => c.toDataURL()")
    page.locator('#words button[data-word="cat"]').click()
    expect(page.locator("#heatmap")).to_have_attribute("data-word", "cat")
    expect(page.locator('#words button[data-word="cat"]')).to_have_attribute("aria-pressed", "true")
    assert canvas_coverage(page) > 0.05
    assert page.locator("#heatmap").evaluate("c => c.toDataURL()") != whole  # redrawn for "cat"
    web.shot("why-cat")

    # Escape closes the large view and gives the focus back to the tile.
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(page.locator("#grid .tile").first).to_be_focused()


def test_keyboard_moves_through_the_grid(web):
    page = web.page
    page.goto(web.base + "/?q=a+cat")
    web.expect_first("cat_chelsea.png")
    page.locator("#summary").click()  # focus off the box
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    assert page.locator("#q").input_value() == "a cat"  # "/" focused, did not type

    def focused() -> int:
        return page.evaluate("Number(document.activeElement.dataset.index ?? -1)")

    cols = page.evaluate(
        "getComputedStyle(document.querySelector('#grid')).gridTemplateColumns.split(' ').length"
    )
    assert cols > 1
    page.keyboard.press("ArrowDown")  # from the box into the grid
    assert focused() == 0
    page.keyboard.press("ArrowRight")
    assert focused() == 1
    page.keyboard.press("ArrowDown")
    assert focused() == 1 + cols
    expect(page.locator(f'#grid .tile[data-index="{1 + cols}"]')).to_have_class("tile current")
    web.shot("keyboard")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowLeft")
    assert focused() == 0
    page.keyboard.press("ArrowUp")  # from the first row back to the box
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#position")).to_have_text(f"2 / {N_PHOTOS}")
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    assert focused() == 1


def test_search_by_dropped_and_picked_image(web):
    page = web.page
    page.goto(web.base + "/")
    expect(page.locator("#status")).to_contain_text(f"{N_PHOTOS} photos")

    # Drop a photo's bytes onto the page, as a file dragged from the desktop would be.
    data = base64.b64encode((SAMPLES / "coffee_cup.jpg").read_bytes()).decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'coffee_cup.jpg', {type: 'image/jpeg'}));
            const target = document.querySelector('#drop');
            target.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
            target.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
                                                       cancelable: true}));
        }""",
        data,
    )
    web.expect_first("coffee_cup.jpg")
    expect(page.locator("#drop")).to_be_hidden()
    expect(page.locator("#summary")).to_contain_text("coffee_cup.jpg")
    web.shot("dropped")
    page.locator("#grid .tile").first.click()
    expect(page.locator("#why")).to_be_hidden()  # no words to explain
    page.keyboard.press("Escape")

    # The "pick image" file input does the same.
    page.locator("#pick").set_input_files(str(SAMPLES / "raccoon.jpg"))
    web.expect_first("raccoon.jpg")
    web.shot("picked")

    # Back returns to the dropped image's results (kept in memory, not in the address).
    page.go_back()
    web.expect_first("coffee_cup.jpg")


def test_pages_through_results(web):
    """Five at a time (offset paging, loaded as the end of the grid nears the screen), the grid
    comes out the same as in one page."""
    page = web.page
    page.goto(web.base + "/?q=a+cat")
    web.expect_first("cat_chelsea.png")
    one_page = web.tile_names()
    page.add_init_script("window.VTSEARCH_PAGE_SIZE = 5")  # from the next load on
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/api/search" in r.url else None)
    page.reload()
    expect(page.locator("#grid .tile")).to_have_count(N_PHOTOS)
    expect(page.locator("#more")).to_be_hidden()
    assert web.tile_names() == one_page
    assert len(requests) == 4 and "offset=15" in requests[-1], requests


def test_errors_are_shown(web):
    page = web.page
    page.goto(web.base + "/?similar=987654321")
    message = page.locator("#message")
    expect(message).to_be_visible()
    assert message.inner_text().strip()
    web.shot("error")
    web.errors.clear()  # the 404 itself is logged by the browser: expected here


def test_api_docs_render_offline(web):
    """FastAPI's /docs viewer, with its scripts served by vtsearch (no CDN): the operations show."""
    page = web.page
    page.goto(web.base + "/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 10
    assert "/api/search" in page.content()
    web.shot("docs")


def test_reindex_shows_progress_until_done(web):
    page = web.page
    page.goto(web.base + "/")
    button = page.locator("#reindex")
    expect(button).to_be_visible()  # a local, writable collection can be re-indexed
    button.click()
    expect(page.locator("#index-text")).to_contain_text("re-indexed", timeout=60_000)
    expect(page.locator("#index-progress")).to_be_hidden()
    expect(page.locator("#message")).to_be_hidden()
    expect(page.locator("#status")).to_contain_text(f"{N_PHOTOS} photos")
    web.shot("reindexed")


def test_tag_filter_narrows_the_grid_and_stays_in_the_address(web):
    page = web.page
    tiles = page.locator("#grid .tile")
    page.goto(web.base + "/?q=a+photo")
    expect(tiles).to_have_count(N_PHOTOS)

    # The picker lists the tags of /api/tags with their counts.
    tag = page.locator("#f-tag")
    expect(tag).to_be_visible()
    counts = {t["tag"]: t["images"] for t in _get_json(web.base + "/api/tags")["tags"]}
    expect(tag.locator("option[value='cat']")).to_have_text(f"cat ({counts['cat']})")

    tag.select_option("cat")
    page.wait_for_url("**/?q=a+photo&tag=cat")
    want = [r["id"] for r in _get_json(web.base + "/api/search?q=a+photo&tag=cat&k=60")["results"]]
    assert 0 < len(want) < N_PHOTOS
    expect(tiles).to_have_count(len(want))  # the grid has redrawn
    assert "cat_chelsea.png" in web.tile_names()
    assert web.tile_ids() == want  # the API's answer, in its order
    expect(page.locator("#summary")).to_contain_text("(filtered)")
    expect(tag).to_have_class(re.compile(r"\bset\b"))
    web.shot("tag-cat")

    # The address keeps it.
    page.reload()
    expect(tag).to_have_value("cat")
    expect(tiles).to_have_count(len(want))
    assert web.tile_ids() == want

    # "clear filters" drops it.
    page.locator("#f-clear").click()
    page.wait_for_url("**/?q=a+photo")
    expect(tag).to_have_value("")
    expect(tiles).to_have_count(N_PHOTOS)


def test_a_tag_in_the_large_view_filters_by_it(web):
    page = web.page
    page.goto(web.base + "/?q=a+photo")
    expect(page.locator("#grid .tile")).to_have_count(N_PHOTOS)
    page.locator("#grid .tile:has(img[alt='rocket_launch.jpg'])").click()
    expect(page.locator("#meta-name")).to_have_text("rocket_launch.jpg")
    # The image's tags, most similar first, each a button.
    tags = page.locator("#meta button[data-tag]")
    expect(tags.first).to_have_text("rocket")
    web.shot("viewer-tags")

    # From the keyboard: Tab to it, Enter.
    web.tab_to(page.locator('#meta button[data-tag="rocket"]'))
    page.keyboard.press("Enter")
    page.wait_for_url("**/?q=a+photo&tag=rocket")
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#f-tag")).to_have_value("rocket")
    want = _get_json(web.base + "/api/search?q=a+photo&tag=rocket&k=60")["results"]
    expect(page.locator("#grid .tile")).to_have_count(len(want))
    assert web.tile_ids() == [r["id"] for r in want]
    assert "rocket_launch.jpg" in web.tile_names()


def test_duplicates_view_by_keyboard(web):
    page = web.page
    page.goto(web.base + "/?q=a+photo")
    expect(page.locator("#grid .tile")).to_have_count(N_PHOTOS)
    page.locator("#dupes").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/?view=dupes")
    expect(page.locator("#grid")).to_be_hidden()
    expect(page.locator("#dupes")).to_have_attribute("aria-current", "page")

    found = _get_json(web.base + "/api/dupes")
    groups = page.locator("#dupe-groups .dupe-group")
    expect(groups).to_have_count(len(found["groups"]))
    (want,) = [g for g in found["groups"] if g["files"][0]["path"] == "raccoon.jpg"]
    assert [f["path"] for f in want["files"]] == ["raccoon.jpg", "copies/raccoon.jpg"]
    raccoon = groups.filter(has=page.locator(".dupe-path", has_text=re.compile("^raccoon.jpg$")))
    expect(raccoon.locator("h2")).to_contain_text("exact copies")
    keep, copy = raccoon.locator(".dupe").nth(0), raccoon.locator(".dupe").nth(1)
    expect(raccoon.locator(".dupe")).to_have_count(2)
    # The one to keep first, marked; the copy says what it is and how similar.
    expect(keep).to_have_class(re.compile(r"\bkeep\b"))
    expect(keep.locator(".mark")).to_have_text("keep")
    expect(keep.locator(".dupe-path")).to_have_text("raccoon.jpg")
    f = want["files"][0]
    expect(keep).to_contain_text(f"{f['width']} × {f['height']}")
    expect(copy.locator(".mark")).to_have_text("exact copy")
    expect(copy.locator(".dupe-path")).to_have_text("copies/raccoon.jpg")
    expect(copy).to_contain_text(f"similarity {want['files'][1]['similarity']:.3f}")
    for img in raccoon.locator("img").all():
        img.evaluate("img => img.decode()")
        assert img.evaluate("img => img.naturalWidth") > 0
    web.shot("dupes")

    # By keyboard: Tab to the copy, Enter opens it large; Esc gives the focus back.
    thumb = copy.locator(".dupe-thumb")
    web.tab_to(thumb)
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#meta")).to_contain_text("copies/raccoon.jpg")
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    expect(thumb).to_be_focused()

    # The view is in the address: reload and back work; a new search returns to the grid.
    page.reload()
    expect(groups).to_have_count(len(found["groups"]))
    page.go_back()
    page.wait_for_url("**/?q=a+photo")
    expect(page.locator("#dupe-groups")).to_be_hidden()
    expect(page.locator("#grid .tile")).to_have_count(N_PHOTOS)
    page.go_forward()
    expect(groups).to_have_count(len(found["groups"]))
    web.search("a cat")
    page.wait_for_url("**/?q=a+cat")
    expect(page.locator("#dupe-groups")).to_be_hidden()
    web.expect_first("cat_chelsea.png")

    # A tag of a copy's large view: no search to narrow, so the tag is the search.
    page.go_back()
    page.wait_for_url("**/?view=dupes")
    thumb.click()
    page.locator('#meta button[data-tag="raccoon"]').click()
    page.wait_for_url("**/?q=raccoon&tag=raccoon")
    expect(page.locator("#grid")).to_be_visible()
    expect(page.locator("#f-tag")).to_have_value("raccoon")
    web.expect_first("raccoon.jpg")


def test_token_link_signs_the_browser_in(browser, collection, tmp_path):
    """With a token, the page opened once as /?token=T works on: its cookie authorises the API
    calls and the thumbnails alike."""
    with serve(collection, token="s3cret-token") as base:
        web = Page(browser, base, tmp_path)
        page = web.page
        try:
            assert page.goto(base + "/").status == 401
            page.goto(base + "/?token=s3cret-token")
            page.wait_for_url(base + "/")  # the token leaves the address
            expect(page.locator("#status")).to_contain_text(f"{N_PHOTOS} photos")
            expect(page.locator("#reindex")).to_be_hidden()  # no --folder: nothing to re-index
            web.search("a cat")
            web.expect_first("cat_chelsea.png")
            page.locator("#grid .tile").first.click()
            expect(page.locator("#meta")).to_contain_text("PNG")
            web.shot("token")
        finally:
            web.close()
        assert [e for e in web.errors if "401" not in e] == [], web.errors


#: The sample photos split by year for the filter bar: 2023 (six, with the one portrait photo)
#: and 2024 (the other 13), each year's by its file time (no sample carries an EXIF date).
IN_2023 = [
    "cat_chelsea.png",
    "coffee_cup.jpg",
    "grace_hopper.jpg",
    "grass.png",
    "raccoon.jpg",
    "rocket_launch.jpg",
]


@pytest.fixture(scope="module")
def by_year(tmp_path_factory, lite):
    """The samples in photos/2023 and photos/2024 (file times in June of each year), indexed
    and served; yields (base URL, the photos folder)."""
    base = tmp_path_factory.mktemp("web-years")
    photos = base / "photos"
    for src in SAMPLES.iterdir():
        if src.suffix in (".jpg", ".png"):
            year = "2023" if src.name in IN_2023 else "2024"
            dst = photos / year / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            t = time.mktime((int(year), 6, 15, 12, 0, 0, 0, 0, -1))
            os.utime(dst, (t, t))
    with Engine(base / "coll", embedder=lite) as eng:
        assert eng.index(photos, workers=0).embedded == 19
    with serve(base / "coll") as url:
        yield url, photos.resolve()


def test_filter_bar_narrows_the_grid_and_stays_in_the_address(browser, by_year, tmp_path):
    base, photos = by_year
    web = Page(browser, base, tmp_path)
    page = web.page
    tiles = page.locator("#grid .tile")
    try:
        page.goto(base + "/?q=a+photo")
        expect(tiles).to_have_count(19)
        expect(page.locator("#f-clear")).to_be_hidden()

        # A date range: taken in 2024 or later (the file times; no EXIF here).
        page.locator("#f-after").fill("2024-01-01")
        page.wait_for_url("**/?q=a+photo&after=2024-01-01")
        expect(tiles).to_have_count(13)
        assert not set(web.tile_names()) & set(IN_2023)
        expect(page.locator("#summary")).to_contain_text("(filtered)")
        web.shot("after-2024")
        # The address keeps it: a reload searches with the same filter, and shows it.
        page.reload()
        expect(tiles).to_have_count(13)
        expect(page.locator("#f-after")).to_have_value("2024-01-01")

        # "to" is inclusive: up to the last day of 2023 is the API's before=2024-01-01.
        page.locator("#f-after").fill("")
        page.locator("#f-until").fill("2023-12-31")
        page.wait_for_url("**/?q=a+photo&before=2024-01-01")
        expect(tiles).to_have_count(6)
        assert set(web.tile_names()) == set(IN_2023)
        page.go_back()  # each filter change is a history entry
        expect(tiles).to_have_count(19)
        page.go_forward()
        expect(tiles).to_have_count(6)

        # A folder: the indexed folder from /api/status, and a subfolder typed below it.
        page.locator("#f-clear").click()
        expect(tiles).to_have_count(19)
        root = page.locator("#f-root")
        expect(root.locator("option")).to_have_count(2)
        root.select_option(str(photos))
        page.locator("#f-sub").fill("2023")
        page.locator("#f-sub").press("Enter")
        page.wait_for_url("**/?q=a+photo&in=*2023")
        expect(tiles).to_have_count(6)
        # With an orientation as well: the one portrait photo of 2023.
        page.locator("#f-orientation").select_option("portrait")
        expect(tiles).to_have_count(1)
        web.expect_first("grace_hopper.jpg")
        web.shot("folder-portrait")
        page.reload()
        expect(page.locator("#f-sub")).to_have_value("2023")
        expect(root).to_have_value(str(photos))
        expect(tiles).to_have_count(1)

        # More like this keeps the filters: photos of 2023 like the cat.
        page.locator("#f-orientation").select_option("")
        expect(tiles).to_have_count(6)
        page.locator("#grid .tile img[alt='cat_chelsea.png']").click()
        page.locator("#more-like-this").click()
        page.wait_for_url("**/?similar=*&in=*2023")
        expect(tiles).to_have_count(5)
        assert set(web.tile_names()) == set(IN_2023) - {"cat_chelsea.png"}
    finally:
        web.close()
    assert web.errors == [], web.errors


def test_no_tags_and_no_duplicates(browser, by_year, tmp_path):
    """A collection never tagged shows no tag picker; one without copies says so."""
    base, _ = by_year
    web = Page(browser, base, tmp_path)
    page = web.page
    try:
        page.goto(base + "/?view=dupes")
        summary = page.locator("#summary")
        expect(summary).to_contain_text("No duplicates")
        expect(summary).to_have_class("empty")
        expect(page.locator("#dupe-groups .dupe-group")).to_have_count(0)
        web.shot("no-dupes")
        web.search("a photo")
        expect(page.locator("#grid .tile")).to_have_count(19)
        expect(page.locator("#f-tag")).to_be_hidden()
    finally:
        web.close()
    assert web.errors == [], web.errors
