"""Table and curve of a click-suggestion simulation (``training.experiments.click_suggestions``).

    python -m training.experiments.click_table docs/results/click-suggestions/click-suggestions.json \\
        --figure docs/click-suggestions.png

Prints, per strategy, the mean mIoU over seeds [min, max] at each budget, and the clicks each
strategy needs to reach the mIoU of ``random`` at its largest budget (linear between budgets,
per seed, then the mean).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import parser


def clicks_to_reach(rows: list[dict[str, float]], target: float) -> float:
    """Clicks at which the curve ``rows`` (budget order) first reaches ``target`` mIoU, linear
    between budgets; NaN if it never does."""
    clicks = [r["clicks"] for r in rows]
    miou = [r["miou"] for r in rows]
    for i, value in enumerate(miou):
        if value >= target:
            if i == 0:
                return float(clicks[0])
            share = (target - miou[i - 1]) / (value - miou[i - 1])
            return float(clicks[i - 1] + share * (clicks[i] - clicks[i - 1]))
    return float("nan")


def table(result: dict[str, Any]) -> str:
    """Markdown: mean [min, max] mIoU per strategy and budget, and clicks to reach random's last."""
    curves = result["curves"]
    seeds = sorted(curves["random"])
    budgets = [r["per_class"] for r in curves["random"][seeds[0]]]
    head = "| strategy | " + " | ".join(f"{b} / class & photo" for b in budgets) + \
        " | clicks to reach random's last (x random's clicks) |"
    lines = [head, "| --- |" + " ---: |" * (len(budgets) + 1)]
    targets = {s: curves["random"][s][-1]["miou"] for s in seeds}
    last_clicks = curves["random"][seeds[0]][-1]["clicks"]
    for strategy, by_seed in curves.items():
        cells = []
        for k in range(len(budgets)):
            values = np.array([by_seed[s][k]["miou"] for s in seeds])
            cells.append(f"{values.mean():.2f} [{values.min():.2f}, {values.max():.2f}]")
        reach = np.array([clicks_to_reach(by_seed[s], targets[s]) for s in seeds])
        reached = f"{np.nanmean(reach):.0f} ({np.nanmean(reach) / last_clicks:.2f})" \
            if np.isfinite(reach).all() else f"not reached by {int(np.isnan(reach).sum())} seed(s)"
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {reached} |")
    return "\n".join(lines)


def figure(result: dict[str, Any], out: Path) -> None:
    """mIoU against clicks, mean over seeds with the min-max band, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for strategy, by_seed in result["curves"].items():
        seeds = sorted(by_seed)
        clicks = [r["clicks"] for r in by_seed[seeds[0]]]
        values = np.array([[r["miou"] for r in by_seed[s]] for s in seeds])
        ax.plot(clicks, values.mean(0), marker="o", label=strategy)
        ax.fill_between(clicks, values.min(0), values.max(0), alpha=0.15)
    ax.set_xlabel(f"clicks on {result['images']} photos (one per class and photo = {result['pairs']})")
    ax.set_ylabel("mIoU (%) of the forest's map")
    ax.set_title("dubai-aerial tiles 5-6: where the next clicks go")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.click_table", __doc__)
    p.add_argument("result", type=Path)
    p.add_argument("--figure", type=Path, default=None)
    args = p.parse_args(argv)
    result = json.loads(args.result.read_text())
    print(table(result))
    if args.figure:
        figure(result, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
