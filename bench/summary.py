"""One table of the figures the benches wrote to .cache/bench/results (run after them).

python bench/summary.py [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS

ORDER = ["indexing", "vector_index", "query_latency", "rerank_latency", "gpu"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="a table for the README")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    files = sorted(args.results.glob("*.json"), key=lambda p: (p.stem not in ORDER, p.stem))
    files.sort(key=lambda p: ORDER.index(p.stem) if p.stem in ORDER else len(ORDER))
    if not files:
        sys.exit(f"no bench results in {args.results}: run the benches first (make bench)")
    total, machines = 0.0, set()
    rows = []
    for f in files:
        data = json.loads(f.read_text())
        machines.add(data.get("machine", "?"))
        total += data.get("seconds", 0.0)
        for r in data["rows"]:
            ok = {True: "yes", False: "NO", None: ""}[r.get("ok")]
            value = r["value"]
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
            if r["unit"] == "ratio" and value < 1.5:
                shown = f"{value:.0%}"
            if r["unit"] == "ratio" and value >= 1.5:
                shown = f"{value:.1f}x"
            unit = "" if r["unit"] == "ratio" else r["unit"]
            rows.append((data["bench"], r["figure"], f"{shown} {unit}".strip(), r["goal"], ok))
    if args.markdown:
        print("| bench | figure | value | goal | met |")
        print("|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        w = max(len(r[1]) for r in rows) + 2
        print(f"\n{'bench':<15}{'figure':<{w}}{'value':>16}  {'goal':<30}{'met':<4}")
        for b, name, value, goal, ok in rows:
            print(f"{b:<15}{name:<{w}}{value:>16}  {goal:<30}{ok:<4}")
    print(f"\nmachine: {'; '.join(sorted(machines))}; benches took {total / 60:.1f} min")


if __name__ == "__main__":
    main()
