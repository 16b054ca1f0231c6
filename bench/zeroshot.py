"""Zero-shot breadth: precision@50 of plain class prompts on flowers-dev and every concepts-dev
set, per class, per set and the mean over the five sets (the protocol of their READMEs).

Each set is indexed once into a throw-away collection (cached under ``.cache/bench``, shared
with ``bench/tags.py``); each class is queried through ``Engine.search`` with a plain prompt,
"a photo of {species}" for flowers-dev and "a photo of a {class}" for concepts-dev (underscores
as spaces; "a long-sleeve shirt", "a jacket"), and precision@50 is the share of the first 50
results in that class's folder. The 50 are the bi-encoder's (re-ranking reorders only its top
10, so it cannot change them). Chance is 1/classes. These sets are for choices only.

    python bench/zeroshot.py [--model vtsearch-lite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, figure, label, machine, save_figures, zeroshot_collection, zeroshot_sets

K = 50


def prompt(set_name: str, class_folder: str) -> str:
    words = label(class_folder)
    return f"a photo of {words}" if set_name == "flowers-dev" else f"a photo of a {words}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vtsearch-lite")
    ap.add_argument("--quiet", action="store_true", help="sets and mean only, no classes")
    args = ap.parse_args()

    from vtsearch.models.registry import load_embedder

    embedder = load_embedder(args.model)
    print(f"machine: {machine()}; model {embedder.model_id}@{embedder.revision}")
    means, rows = {}, []
    for name, folder in zeroshot_sets().items():
        eng = zeroshot_collection(name, folder, embedder)
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        precision = []
        with Timer() as t:
            for c in classes:
                hits = eng.search(text=prompt(name, c), k=K, rerank=False)
                precision.append(np.mean([Path(h.path).parent.name == c for h in hits]))
        eng.close()
        means[name] = float(np.mean(precision))
        print(f"\n{name} (chance {1 / len(classes):.3f}; {len(classes)} queries in {t.s:.1f} s)")
        if not args.quiet:
            for c, p in zip(classes, precision, strict=True):
                print(f"  {prompt(name, c):<40} {p:.3f}")
        print(f"  {'mean':<40} {means[name]:.3f}")
        rows.append(figure(f"zero-shot P@50, {name}", round(means[name], 3)))
    mean = float(np.mean(list(means.values())))
    print("\n" + " / ".join(f"{n} {v:.3f}" for n, v in means.items()) + f"; mean {mean:.3f}")
    rows.append(figure("zero-shot P@50, mean over the five sets", round(mean, 3), goal=">= 0.55"))
    save_figures("zeroshot", rows)


if __name__ == "__main__":
    main()
