"""Near-duplicate detection on planted copies of Flickr8k photos: the threshold sweep behind
``DEFAULT_THRESHOLD`` (dev) and precision, recall and time at that threshold (test).

A split's 1,000 photos are copied into a cache folder together with planted copies of some of
them, made with Pillow (seeded):

- ``resized``: both sides halved (Lanczos), JPEG quality 90
- ``jpeg40``: re-encoded at JPEG quality 40
- ``crop90``: the centre 90% of each side, JPEG quality 90
- ``text``: a small caption ("(c) 2014 J. Smith") drawn in a corner with ImageDraw, JPEG 90
- ``exact``: a byte-for-byte copy

100 photos get all four edited copies (a group of five), 200 others one each (50 per kind) and 25
others a byte copy: 625 copies, 1,225 true pairs among 1,625 files. The files are indexed with the
default model (vtsearch-lite) through ``Engine.index``; photos and collection are cached under
``.cache/bench/dupes-<split>-<model revision>``.

A found pair is two files in one group of ``Engine.duplicates`` (what a person is shown); a true
pair is two files made from one photo. ``--split dev`` sweeps the threshold of both measures
(``search/dupes.py``: region tokens, what the default model's collections use, and the vectors
alone) and picks the best F1 among thresholds with precision >= 0.95 (how ``DEFAULT_THRESHOLD``
was chosen); ``--split test``
reports precision and recall at the default threshold (goals: both >= 0.95) and the time of the
whole pass. False pairs between two different Flickr8k photos are listed with their Flickr photo
ids and the pixel correlation of their 32x32 grey thumbnails, to tell bursts (one scene shot twice)
from the model's mistakes; ``--sheet`` draws them side by side into a PNG to look at.

``--scale N`` times the whole pass on a synthetic collection of N images instead: each row a
real vtsearch-lite vector of those collections, perturbed (cosine about 0.9 to it, so every
image has many candidates: the costly case), with random region tokens, and the index kind the
factory picks for N (flat up to 50,000, HNSW over 8-bit codes beyond).

    python bench/dupes.py --split dev     # the sweep behind DEFAULT_THRESHOLD
    python bench/dupes.py                 # test: precision, recall, time
    python bench/dupes.py --scale 20000   # time at 20,000 images (after a dev or test run)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, Timer, figure, flickr_images, machine, save_figures

KINDS = ("resized", "jpeg40", "crop90", "text")
ALL_FOUR, ONE_EACH, BYTE_COPIES = 100, 200, 25
GOAL = 0.95


def planted_copy(src: Path, dst: Path, kind: str) -> None:
    """``dst``: a copy of the photo ``src`` edited as ``kind`` says (see the module docstring)."""
    from PIL import Image, ImageDraw, ImageFont

    if kind == "exact":
        shutil.copyfile(src, dst)
        return
    im = Image.open(src).convert("RGB")
    w, h = im.size
    quality = 90
    if kind == "resized":
        im = im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    elif kind == "jpeg40":
        quality = 40
    elif kind == "crop90":
        dx, dy = round(w * 0.05), round(h * 0.05)
        im = im.crop((dx, dy, w - dx, h - dy))
    elif kind == "text":
        draw = ImageDraw.Draw(im)
        font = ImageFont.load_default(size=max(9, h // 16))
        text = "(c) 2014 J. Smith"
        box = draw.textbbox((0, 0), text, font=font)
        x, y = w - (box[2] - box[0]) - 4, h - (box[3] - box[1]) - 6
        draw.text((x, y), text, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=0)
    else:
        raise ValueError(kind)
    im.save(dst, "JPEG", quality=quality)


def plant(split: str, folder: Path) -> dict[str, str]:
    """The split's photos and their planted copies in ``folder``: ``{file name: the original's
    name}`` (the true groups)."""
    photos = flickr_images(split=split)
    rng = np.random.default_rng(15)
    order = rng.permutation(len(photos))
    plan: list[tuple[Path, str]] = []
    for n, i in enumerate(order[: ALL_FOUR + ONE_EACH + BYTE_COPIES]):
        if n < ALL_FOUR:
            plan += [(photos[i], k) for k in KINDS]
        elif n < ALL_FOUR + ONE_EACH:
            plan.append((photos[i], KINDS[n % len(KINDS)]))
        else:
            plan.append((photos[i], "exact"))
    truth = {p.name: p.name for p in photos}
    done = folder / "complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "copies").mkdir(parents=True)
        (folder / "originals").mkdir()
        for p in photos:
            shutil.copyfile(p, folder / "originals" / p.name)
        for src, kind in plan:
            planted_copy(src, folder / "copies" / f"{src.stem}__{kind}.jpg", kind)
        done.write_text("ok")
    for src, kind in plan:
        truth[f"{src.stem}__{kind}.jpg"] = src.name
    return truth


def kind_of(name: str) -> str:
    return name.rsplit("__", 1)[1][:-4] if "__" in name else "original"


def pair_counts(groups: list[list[str]], truth: dict[str, str]) -> tuple[int, int, int]:
    """(found pairs, true pairs found, true pairs) of a grouping of file names."""
    found = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    hit = sum(c * (c - 1) // 2 for g in groups for c in Counter(truth[n] for n in g).values())
    sizes = Counter(truth.values()).values()
    return found, hit, sum(c * (c - 1) // 2 for c in sizes)


def prf(found: int, hit: int, true: int) -> tuple[float, float, float]:
    p = hit / found if found else 1.0
    r = hit / true if true else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def kind_recall(groups: list[list[str]], truth: dict[str, str]) -> dict[str, float]:
    """Per kind of copy: the share grouped with their original."""
    where = {n: i for i, g in enumerate(groups) for n in g}
    out = {}
    for kind in (*KINDS, "exact"):
        copies = [n for n in truth if kind_of(n) == kind]
        ok = sum(1 for n in copies if n in where and where.get(truth[n]) == where[n])
        out[kind] = ok / len(copies) if copies else float("nan")
    return out


def false_pairs(groups: list[list[str]], truth: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of different original photos whose files were grouped (each pair once)."""
    out = set()
    for g in groups:
        for x, y in combinations(g, 2):
            a, b = sorted((truth[x], truth[y]))
            if a != b:
                out.add((a, b))
    return sorted(out)


def grey(path: Path) -> np.ndarray:
    from PIL import Image

    v = np.asarray(Image.open(path).convert("L").resize((32, 32)), dtype=np.float32).ravel()
    return (v - v.mean()) / (v.std() + 1e-6)


def describe_false(pairs, photos: Path) -> list[tuple[str, str, int, float]]:
    """(a, b, Flickr id gap, pixel correlation) of each false pair."""
    out = []
    for a, b in pairs:
        gap = abs(int(a.split("_")[0]) - int(b.split("_")[0]))
        corr = float(grey(photos / a) @ grey(photos / b)) / (32 * 32)
        out.append((a, b, gap, corr))
    return out


def contact_sheet(pairs, photos: Path, out: Path) -> None:
    from PIL import Image, ImageDraw

    rows = max(1, len(pairs))
    sheet = Image.new("RGB", (2 * 160 + 10, rows * 170), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (a, b, gap, corr) in enumerate(pairs):
        for c, name in enumerate((a, b)):
            im = Image.open(photos / name).convert("RGB").resize((160, 160))
            sheet.paste(im, (c * 170, r * 170))
        draw.text((2, r * 170 + 160), f"{r}: gap {gap} corr {corr:.2f}", fill=0)
    sheet.save(out)


def sweep(name, a, b, s, exact, thresholds, name_of, truth) -> float | None:
    """Print P/R/F1 of the grouped and the direct pairs at each threshold; the best F1 among
    thresholds with precision >= GOAL."""
    from vtsearch.search.dupes import group_pairs

    true_pairs = pair_counts([], truth)[2]
    print(f"\n{name}: {len(a):,} pairs scoring >= {thresholds[0]} ({true_pairs:,} true pairs)")
    print(
        "  threshold | grouped pairs: P     R     F1    | direct pairs: P     R     | "
        "recall by kind: " + " ".join(f"{k:>7}" for k in (*KINDS, "exact"))
    )
    best = None
    for thr in thresholds:
        keep = s >= thr
        g = [[name_of[i] for i in grp] for grp in group_pairs(a[keep], b[keep], exact)]
        p, r, f1 = prf(*pair_counts(g, truth))
        ok = sum(
            truth[name_of[x]] == truth[name_of[y]]
            for x, y in zip(a[keep].tolist(), b[keep].tolist(), strict=True)
        )
        dp, dr, _ = prf(int(keep.sum()), ok, true_pairs)
        kr = kind_recall(g, truth)
        print(
            f"    {thr:.3f}   |          {p:.3f} {r:.3f} {f1:.3f} |         {dp:.3f} {dr:.3f} |"
            "                " + " ".join(f"{kr[k]:7.3f}" for k in (*KINDS, "exact"))
        )
        if p >= GOAL and (best is None or f1 > best[1]):
            best = (thr, f1)
    if best:
        print(f"  best F1 with precision >= {GOAL}: threshold {best[0]:.3f} (F1 {best[1]:.3f})")
        return best[0]
    return None


def scale(n: int) -> None:
    """Time ``Engine.duplicates`` on a synthetic collection of ``n`` images (see the docstring)."""
    from vtsearch import Engine
    from vtsearch.storage.catalog import Catalog, NewImage
    from vtsearch.storage.rebuild import optimize
    from vtsearch.storage.tokens import TokenCache

    bases = []
    for coll in sorted(CACHE.glob("dupes-*-*/collection")):
        cat = Catalog.open(coll)
        bases += [np.frombuffer(b, np.float32) for _, b in cat.live_vectors()]
        model, rev, dim = (cat.get_meta(k) for k in ("model_id", "model_revision", "dim"))
        cat.close()
    if not bases:
        sys.exit("no real vectors yet: run `python bench/dupes.py --split dev` first")
    base = np.stack(bases)
    folder = CACHE / f"dupes-scale-{n}-{rev}"
    if not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"writing a synthetic {n:,}-image collection to {folder} (once) ...", flush=True)
        cat = Catalog.open(folder)
        cat.bind_model(model, int(dim), rev)
        tokens = TokenCache(folder, 49, 256, "synthetic")
        rng = np.random.default_rng(0)
        for start in range(0, n, 2000):
            m = min(2000, n - start)
            v = base[(start + np.arange(m)) % len(base)].copy()
            v += rng.standard_normal(v.shape, dtype=np.float32) * (0.45 / np.sqrt(v.shape[1]))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            rows = [
                NewImage(
                    f"/synthetic/{start + i:07d}.jpg",
                    2_000_000 + i,
                    start + i,
                    f"{start + i:064x}",
                    v[i],
                    4000,
                    3000,
                    "JPEG",
                )
                for i in range(m)
            ]
            ids = [i for i, _ in cat.write_batch(rows)]
            tokens.put(np.array(ids), rng.standard_normal((m, 49, 256), dtype=np.float32))
        optimize(folder, cat, force=True)
        cat.close()
        (folder / "complete").write_text("ok")
    eng = Engine(folder)
    with Timer() as cold:
        eng.duplicates()
    with Timer() as warm:
        found = eng.duplicates()
    kind = eng.status().index_kind
    print(
        f"{n:,} images, {kind} index, {found.measure}: {cold.s:.1f} s cold, {warm.s:.1f} s "
        f"warm ({warm.s / n * 1e3:.2f} ms an image); {len(found)} groups"
    )
    eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["dev", "test"], default="test")
    ap.add_argument("--threshold", type=float, default=None, help="default: DEFAULT_THRESHOLD")
    ap.add_argument("--sheet", type=Path, default=None, help="a PNG of the false pairs")
    ap.add_argument("--scale", type=int, default=0, help="time a synthetic collection of N")
    args = ap.parse_args()
    if args.scale:
        print(f"machine: {machine()}")
        scale(args.scale)
        return

    from vtsearch import Engine
    from vtsearch.models.registry import load_embedder
    from vtsearch.search.dupes import (
        DEFAULT_THRESHOLD,
        REGIONS,
        VECTORS,
        exact_groups,
        group_pairs,
        near_pairs,
    )
    from vtsearch.storage.tokens import TokenCache

    print(f"machine: {machine()}")
    emb = load_embedder("vtsearch-lite", device="cpu")
    base = CACHE / f"dupes-{args.split}-{emb.revision or 'r0'}"
    truth = plant(args.split, base / "photos")
    coll = base / "collection"
    eng = Engine(coll, embedder=emb)
    with Timer() as t:
        report = eng.index(base / "photos")
    if report.embedded:
        print(f"indexed {report.embedded} files in {t.s:.0f} s (once)")
    eng.close()

    # The whole pass as a user runs it: a fresh engine opens the catalog, loads the index and
    # reads the token cache (cold), then again (warm).
    eng = Engine(coll, embedder=emb)
    n_files = eng.status().indexed
    assert n_files == len(truth), (n_files, len(truth))
    with Timer() as cold:
        eng.duplicates(args.threshold)
    with Timer() as warm:
        found = eng.duplicates(args.threshold)
    print(f"\n{n_files:,} files ({len(truth) - 1000} planted copies), {args.split} split")
    print(
        f"Engine.duplicates ({found.measure} measure, threshold {found.threshold}), the whole "
        f"collection: {cold.s:.2f} s cold, {warm.s:.2f} s warm "
        f"({warm.s / n_files * 1e3:.2f} ms an image)"
    )

    catalog, vindex = eng._parts.catalog(create=False), eng._parts.stored_vectors()
    tokens = TokenCache.open_existing(coll)
    rows = catalog.rows(range(1, catalog.max_image_id() + 1))
    name_of = {rid: Path(rec.path).name for rid, rec in rows.items()}
    exact = exact_groups(catalog)
    if args.split == "dev":
        # The choice of DEFAULT_THRESHOLD: on dev only.
        sweep(
            "region measure",
            *near_pairs(catalog, vindex, 0.45, tokens),
            exact,
            [round(t, 3) for t in np.arange(0.45, 0.801, 0.01)],
            name_of,
            truth,
        )
        sweep(
            "vector measure (collections without region tokens)",
            *near_pairs(catalog, vindex, 0.75),
            exact,
            [round(t, 3) for t in np.arange(0.75, 0.991, 0.01)],
            name_of,
            truth,
        )

    g = [[Path(f.path).name for f in grp.files] for grp in found]
    p, r, f1 = prf(*pair_counts(g, truth))
    kr = kind_recall(g, truth)
    print(
        f"\nat threshold {found.threshold} ({found.measure}): {len(g)} groups; pairs "
        f"precision {p:.3f}, recall {r:.3f}, F1 {f1:.3f}"
    )
    print("  recall by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in kr.items()))
    wrong = describe_false(false_pairs(g, truth), base / "photos" / "originals")
    print(f"  false pairs between different photos: {len(wrong)}")
    for x, y, gap, corr in wrong:
        print(f"    {x} ~ {y}: Flickr id gap {gap:,}, 32x32 grey correlation {corr:.2f}")
    if args.sheet and wrong:
        contact_sheet(wrong, base / "photos" / "originals", args.sheet)
        print(f"  side by side: {args.sheet}")
    kept = sum(1 for grp in found if kind_of(Path(grp.keep.path).name) in ("original", "exact"))
    print(f"  groups whose kept file is the original (or its byte copy): {kept}/{len(g)}")

    # The vector measure at its default, for comparison (what a collection without tokens gets).
    va, vb, _ = near_pairs(catalog, vindex, DEFAULT_THRESHOLD[VECTORS])
    gv = [[name_of[i] for i in grp] for grp in group_pairs(va, vb, exact)]
    vp, vr, vf1 = prf(*pair_counts(gv, truth))
    print(
        f"vector measure at its default {DEFAULT_THRESHOLD[VECTORS]}: precision {vp:.3f}, "
        f"recall {vr:.3f}, F1 {vf1:.3f}"
    )
    eng.close()

    if args.split == "test" and args.threshold is None and found.measure == REGIONS:
        save_figures(
            "dupes",
            [
                figure(
                    "dupes: pair precision, planted copies", p, "ratio", f">= {GOAL}", p >= GOAL
                ),
                figure("dupes: pair recall, planted copies", r, "ratio", f">= {GOAL}", r >= GOAL),
                figure(f"dupes: {n_files:,} images, whole pass", warm.s, "s"),
                figure("dupes: per image", warm.s / n_files * 1e3, "ms"),
            ],
        )


if __name__ == "__main__":
    main()
