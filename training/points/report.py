"""Tables of the point-layer comparison, from the runs' ``metrics.json``.

    python -m training.points.report --simulated RUN --layer NAME=RUN [NAME=RUN ...]

Prints, per epoch, the dense validation mIoU of the simulated-points run and of each
point-layer run, and each point-layer run's estimate from its held-out points (point mIoU and
its difference to the dense mIoU); then one line per point-layer run: mean absolute difference
over the epochs, and whether the best epoch by points is the best epoch by masks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.cli import fail, parser


def epochs(run: Path) -> list[dict[str, Any]]:
    """The epoch records of a run folder's metrics.json."""
    path = run / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return json.loads(path.read_text())["epochs"]


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def table(simulated: list[dict[str, Any]], layers: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table (module doc)."""
    head = ["epoch", "simulated points: dense mIoU %"]
    for name in layers:
        head += [f"{name}: dense mIoU %", f"{name}: point mIoU %", f"{name}: point - dense"]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for k, record in enumerate(simulated):
        row = [str(record["epoch"] + 1), pct(record["val_miou"])]
        for runs in layers.values():
            r = runs[k] if k < len(runs) else {}
            dense, point = r.get("val_dense_miou"), r.get("val_miou")
            gap = f"{100 * (point - dense):+.2f}" if dense is not None and point is not None else "n/a"
            row += [pct(dense), pct(point), gap]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def agreement(runs: list[dict[str, Any]]) -> str:
    """Mean |point - dense| mIoU over the epochs and the best epoch by each."""
    pairs = [(r["val_miou"], r["val_dense_miou"]) for r in runs if "val_dense_miou" in r]
    if not pairs:
        return "no dense masks in this run"
    gap = sum(abs(p - d) for p, d in pairs) / len(pairs)
    by_points = max(range(len(runs)), key=lambda k: runs[k]["val_miou"])
    by_masks = max(range(len(runs)), key=lambda k: runs[k].get("val_dense_miou", -1.0))
    return (f"mean |point - dense| {100 * gap:.2f} points of mIoU over {len(pairs)} epochs; best "
            f"epoch by points {by_points + 1} (dense {pct(runs[by_points]['val_dense_miou'])}%), "
            f"by masks {by_masks + 1} (dense {pct(runs[by_masks]['val_dense_miou'])}%)")


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.points.report", __doc__)
    p.add_argument("--simulated", type=Path, required=True, help="run folder of the simulated-points run")
    p.add_argument("--layer", nargs="+", required=True, metavar="NAME=RUN",
                   help="point-layer run folders, each with a column name")
    args: argparse.Namespace = p.parse_args(argv)
    try:
        layers = {}
        for item in args.layer:
            name, sep, run = item.partition("=")
            if not sep:
                return fail(f"--layer {item}: expected NAME=RUN")
            layers[name] = epochs(Path(run))
        print(table(epochs(args.simulated), layers))
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        return fail(str(exc))
    print()
    for name, runs in layers.items():
        print(f"- {name}: {agreement(runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
