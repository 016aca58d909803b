"""The table of GeoSeg runs against the forest peer: final and best validation mIoU, seconds, the
seconds until a run's validated map first reaches the forest peer's mean mIoU (the forest's own
map takes its ``seconds``: the first map a user can have), the final map of network and forest
together that ``geoseg predict`` draws (a ``shipped.json`` written by ``geoseg evaluate --json``
after the run, the map as it is drawn now, else ``final_with_forest`` of ``metrics.json``), and
(where ``training.experiments.combine`` ran) the network + forest mean and the maps averaged
within regions, per run folder; each
run's forest row is the ``forest.json`` of ``geoseg peer-forest`` with the same points.

    python -m training.experiments.forest_table --runs docs/results/forest-labels/cross-*-s* \\
        --forests docs/results/forest/tiles1-4-to-5-6-s*
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

import numpy as np

from common.cli import parser


def run_row(run: Path, level: float = float("inf")) -> dict[str, float]:
    """Final and best validation mIoU (%), training seconds, ``reach``: seconds until the first
    validated epoch whose mIoU is at least ``level`` % (the forest labels' seconds included;
    inf when none is), and (if present) the combine scores."""
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = metrics["epochs"]
    forest_seconds = sum((metrics["config"].get("forest_labels") or {}).get("seconds", {}).values())
    elapsed = forest_seconds + np.cumsum([e["seconds"] for e in epochs])
    reached = [t for t, e in zip(elapsed, epochs) if 100 * e["val_miou"] >= level]
    row = {"final": 100 * epochs[-1]["val_miou"], "best": 100 * max(e["val_miou"] for e in epochs),
           "seconds": float(elapsed[-1]), "reach": float(reached[0]) if reached else float("inf")}
    shipped = run / "shipped.json"   # geoseg evaluate --json after the run: the map drawn now
    if shipped.is_file():
        row["shipped"] = 100 * json.loads(shipped.read_text())["miou"]
    elif "final_with_forest" in metrics:
        row["shipped"] = 100 * metrics["final_with_forest"]["val_miou"]
    combine = run / "combine.json"
    if combine.is_file():
        scored = json.loads(combine.read_text())["miou"]
        row.update({name: 100 * scored[name] for name in COMBINED if name in scored})
    return row


COMBINED = {"mean": "network + forest mean",
            "network_segments": "network, averaged within regions",
            "forest_segments": "forest peer, averaged within regions",
            "mean_segments": "network + forest mean, averaged within regions"}
"""The ``combine.json`` scores the table shows, with their row names."""


def spread(values: list[float]) -> str:
    """``mean [min, max]`` with two decimals."""
    return f"{mean(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.forest_table", __doc__)
    p.add_argument("--runs", nargs="+", type=Path, required=True, help="geoseg train run folders")
    p.add_argument("--forests", nargs="+", type=Path, required=True,
                   help="geoseg peer-forest folders (forest.json) of the same points")
    args = p.parse_args(argv)
    forests = [100 * json.loads((f / "forest.json").read_text())["miou"] for f in args.forests]
    forest_seconds = [json.loads((f / "forest.json").read_text())["seconds"]["total"]
                      for f in args.forests]
    rows = [run_row(r, mean(forests)) for r in args.runs]
    print("| row | final mIoU % | best mIoU % | x forest (final) | seconds | seconds to the "
          "forest's mIoU |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    print(f"| forest peer | {spread(forests)} | | 1.00 | {mean(forest_seconds):.0f} "
          f"| {mean(forest_seconds):.0f} (its map) |")
    final = [r["final"] for r in rows]
    reach = [r["reach"] for r in rows]
    reached = ", ".join(f"{t:.0f}" if t < float("inf") else "never" for t in reach)
    print(f"| GeoSeg, forest labels | {spread(final)} | {spread([r['best'] for r in rows])} | "
          f"{mean(final) / mean(forests):.3f} | {mean(r['seconds'] for r in rows):.0f} | "
          f"{reached} (per run) |")
    if all("shipped" in r for r in rows):
        values = [r["shipped"] for r in rows]
        print(f"| **GeoSeg's map: network and forest within regions (geoseg predict / evaluate)** "
              f"| {spread(values)} | | {mean(values) / mean(forests):.3f} | | |")
    for name, label in COMBINED.items():
        if all(name in r for r in rows):
            values = [r[name] for r in rows]
            print(f"| {label} | {spread(values)} | | {mean(values) / mean(forests):.3f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
