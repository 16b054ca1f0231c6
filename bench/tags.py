"""Zero-shot tag accuracy of the default model on the zero-shot dev sets: flowers-dev and every
set of concepts-dev (imagenette, clothing, trashnet, food101-10; see their READMEs).

Each set is indexed into a collection of its own (cached under ``.cache/bench/tags-<set>-<model
revision>``) and tagged through ``Engine.tag`` with the set's class names as the label file
(underscores as spaces, with the two wording fixes concepts-dev's README names: longsleeve is "a
long-sleeve shirt", outwear "a jacket"). Top-1 accuracy is the share of photos whose first tag
(the most similar label) is their folder's class; chance is 1/classes. Beside it:

- ``1 prompt``: the same with the single prompt "a photo of a {}." instead of the ensemble (the
  choice between them is judged on all sets together);
- ``kept`` and ``precision``: tags kept per photo at the calibrated threshold (else the top 1),
  and the share of kept tags that are the photo's class.

These sets are for choices only: nothing here is fitted on them (the calibration comes from
Flickr8k dev, ``vtsearch train tag-calibration``).

    python bench/tags.py
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Timer,
    figure,
    label,
    machine,
    save_figures,
    zeroshot_collection,
    zeroshot_sets,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="one set's name")
    args = ap.parse_args()

    from vtsearch.indexer.tagging import label_vectors
    from vtsearch.models.calibration import load_tag_calibration
    from vtsearch.models.registry import load_embedder

    embedder = load_embedder("vtsearch-lite")
    cal = load_tag_calibration(embedder)
    print(f"machine: {machine()}; calibration: {cal}")
    rows, table = [], []
    for name, folder in zeroshot_sets().items():
        if args.only and name != args.only:
            continue
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        labels = [label(c) for c in classes]
        with Timer() as t_index:
            eng = zeroshot_collection(name, folder, embedder)
        with Timer() as t_tag:
            report = eng.tag(labels, name="bench")  # the same labels: only new photos re-tagged
        catalog = eng._parts.catalog(create=False)
        ids, vecs, truth = [], [], []
        for chunk_ids, chunk in catalog.untagged_vectors("no such set"):
            ids.extend(int(i) for i in chunk_ids)
            vecs.append(chunk)
        rows_of = catalog.rows(ids)
        truth = [labels[classes.index(Path(rows_of[i].path).parent.name)] for i in ids]
        tags = catalog.tags_of(ids)
        top1 = np.mean([tags[i][0].label == y for i, y in zip(ids, truth, strict=True)])
        kept = [len(tags[i]) for i in ids]
        right = sum(sum(t.label == y for t in tags[i]) for i, y in zip(ids, truth, strict=True))
        one, kinds = label_vectors(embedder, labels, ("a photo of a {}.",))
        scores = np.concatenate(vecs) @ one.T
        pick = (cal.confidence(scores, kinds) if cal else scores).argmax(axis=1)
        top1_one = np.mean([labels[j] == y for j, y in zip(pick, truth, strict=True)])
        confusions = Counter(
            (y, tags[i][0].label) for i, y in zip(ids, truth, strict=True) if tags[i][0].label != y
        ).most_common(2)
        table.append(
            (name, len(ids), len(classes), top1, top1_one, np.mean(kept), right / sum(kept))
        )
        print(
            f"{name}: {len(ids)} photos, {len(classes)} classes; indexed in {t_index.s:.1f} s, "
            f"tagged {report.scored} in {t_tag.s:.2f} s; most confused: {confusions}"
        )
        eng.close()
        rows.append(figure(f"tag top-1, {name}", round(float(top1), 3)))
    print()
    print(f"{'set':<12} {'photos':>6} {'chance':>6} {'top-1':>6} {'1 prompt':>8} "
          f"{'kept':>5} {'precision':>9}")  # fmt: skip
    for name, n, k, top1, one, kept, prec in table:
        print(f"{name:<12} {n:>6} {1 / k:>6.3f} {top1:>6.3f} {one:>8.3f} {kept:>5.2f} {prec:>9.3f}")
    if len(table) > 1:
        mean = np.mean([r[3] for r in table])
        mean_one = np.mean([r[4] for r in table])
        print(f"{'mean':<12} {'':>6} {'':>6} {mean:>6.3f} {mean_one:>8.3f}")
        rows.append(figure("tag top-1, mean over the sets", round(float(mean), 3)))
    save_figures("tags", rows)


if __name__ == "__main__":
    main()
