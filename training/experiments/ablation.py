"""Run the supervision ablation and write its table: same model, steps and seed per row; only the
labels and the loss change.

Each row is one ``geoseg train`` run per seed into ``OUT/<row>-s<seed>``; the table gives the
validation mIoU at the final epoch and at the best epoch (the best is chosen on the same
validation images, so it flatters: the final epoch is the honest figure), mean and [min, max]
over the seeds, the ratio to the dense row's final-epoch mean, seconds per training step, and the
one-off preprocessing per image (superpixels) where a row has it.

    python -m training.experiments.ablation runs/ablation-dubai --rows p10 p10-sp p10-crf p10-both dense \\
        --seeds 0 1 2 -- --data ../shared/data/dubai-aerial --dataset folders ...
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from common.cli import fail, parser


@dataclass(frozen=True)
class Row:
    """One ablation row: its label in the table and the ``geoseg train`` options it adds."""

    label: str
    options: tuple[str, ...]


P10, P50 = ("--points-per-class", "10"), ("--points-per-class", "50")
GATED_CRF = ("--crf-weight", "0.02")
CRF = (*GATED_CRF, "--expand", "none")  # the Gated CRF alone, as these rows were measured
SUPERPIXELS = ("--expand", "superpixels")
SELF_TRAINING = ("--pseudo-labels",)
FP32 = ("--amp", "off")
CRF_SWEEP = ("0.01", "0.05", "0.1")
"""Gated CRF weights of the sweep rows ``p10-crf<W>``, beside ``p10-crf`` (the default, 0.02)."""

ROWS: dict[str, Row] = {
    "p10": Row("10 points, plain pfCE", (*P10, "--plain")),
    "p10-sp": Row("10 points + superpixels", (*P10, *SUPERPIXELS, "--crf-weight", "0")),
    "p10-crf": Row("10 points + Gated CRF", (*P10, *CRF)),
    "p10-both": Row("10 points + superpixels + Gated CRF", (*P10, *SUPERPIXELS, *GATED_CRF)),
    "p50": Row("50 points, plain pfCE", (*P50, "--plain")),
    "p50-crf": Row("50 points + Gated CRF", (*P50, *CRF)),
    "p50-both": Row("50 points + superpixels + Gated CRF", (*P50, *SUPERPIXELS, *GATED_CRF)),
    "dense": Row("dense masks", ("--dense",)),
    "dense-fp32": Row("dense masks, fp32 training", ("--dense", *FP32)),
    "p10-crf-fp32": Row("10 points + Gated CRF, fp32 training", (*P10, *CRF, *FP32)),
    "p10-st": Row("10 points + self-training", (*P10, "--crf-weight", "0", "--expand", "none",
                                                *SELF_TRAINING)),
    "p10-crf-st": Row("10 points + Gated CRF + self-training", (*P10, *CRF, *SELF_TRAINING)),
    **{f"p10-crf-st{t}": Row(f"10 points + Gated CRF + self-training (threshold {t})",
                             (*P10, *CRF, *SELF_TRAINING, "--pseudo-threshold", t))
       for t in ("0.6", "0.8")},
    **{f"p10-crf{w}": Row(f"10 points + Gated CRF {w}", (*P10, "--crf-weight", w, "--expand", "none"))
       for w in CRF_SWEEP},
    "p10-forest": Row("10 points + forest labels + Gated CRF (the default)",
                      (*P10, *GATED_CRF, "--expand", "forest", "--expand-weight", "1.0")),
}


def run_row(name: str, seed: int, out: Path, common: list[str], log: Path) -> Path:
    """Train one row for one seed (a subprocess, so rows do not share state); its run folder."""
    folder = out / f"{name}-s{seed}"
    cmd = [sys.executable, "-m", "training.train", *common, *ROWS[name].options,
           "--seed", str(seed), "--out", str(folder), "--no-progress", "--overwrite"]
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"row {name} seed {seed} failed (exit {proc.returncode}); see {log}")
    return folder


def summarise(folders: list[Path]) -> dict[str, Any]:
    """Final and best validation mIoU (fractions), seconds per step and preprocessing of runs."""
    final, best, step_s, prep = [], [], [], []
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        epochs = metrics["epochs"]
        final.append(epochs[-1]["val_miou"])
        best.append(max(e["val_miou"] for e in epochs))
        steps = metrics["config"]["steps_per_epoch"] * len(epochs)
        step_s.append(sum(e["train_seconds"] for e in epochs) / steps)
        done = epochs[-1].get("superpixels") or {}
        if done.get("computed"):  # cumulative over the run: SLIC seconds per image it computed
            prep.append(done["seconds_per_image"])
    return {"final": final, "best": best, "seconds_per_step": statistics.median(step_s),
            "preprocess_s_per_image": statistics.median([p for p in prep if p is not None])
            if any(p is not None for p in prep) else None}


def _spread(values: list[float]) -> str:
    """Mean in %, then [min, max] over two or three runs, or ± standard deviation and [min, max]
    over more."""
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    sd = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 3 else ""
    return f"{mean:.2f}{sd} [{100 * min(values):.2f}, {100 * max(values):.2f}]"


def _seeds(seeds: list[int]) -> str:
    """The seeds column: the seeds, or for pooled repeats "N runs (seeds A-B)"."""
    if len(set(seeds)) == len(seeds):
        return ", ".join(map(str, sorted(seeds)))
    return f"{len(seeds)} runs (seeds {min(seeds)}-{max(seeds)})"


def table(results: dict[str, dict[str, Any]], seeds: dict[str, list[int]]) -> str:
    """Markdown table of the ablation; ratios against the dense row's final-epoch mean."""
    dense = results.get("dense")
    reference = statistics.fmean(dense["final"]) if dense else None
    lines = ["| row | seeds | final-epoch mIoU % | best-epoch mIoU % | final ÷ dense | s / step "
             "| preprocessing s / image |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        ratio = f"{statistics.fmean(r['final']) / reference:.2f}" if reference else "n/a"
        prep = r["preprocess_s_per_image"]
        lines.append(f"| {ROWS[name].label} | {_seeds(seeds[name])} | {_spread(r['final'])} "
                     f"| {_spread(r['best'])} | {ratio} | {r['seconds_per_step']:.3f} "
                     f"| {'-' if prep is None else f'{prep:.2f}'} |")
    return "\n".join(lines) + "\n"


def pooled_runs(folders: list[Path], row: str) -> tuple[list[Path], list[int]]:
    """Every finished run of ``row`` in ``folders`` (``<row>-s<seed>`` holding metrics.json), and
    their seeds (one per run, repeats included)."""
    runs, seeds = [], []
    for folder in folders:
        for run in sorted(folder.glob(f"{row}-s*")):
            seed = run.name[len(row) + 2:]
            if seed.isdigit() and (run / "metrics.json").is_file():
                runs.append(run)
                seeds.append(int(seed))
    return runs, seeds


def report_pool(folders: list[Path], rows: list[str]) -> int:
    """``--pool``: the table of every run of ``rows`` found in ``folders``; writes
    ``table.md`` into the first folder."""
    results: dict[str, dict[str, Any]] = {}
    seeds: dict[str, list[int]] = {}
    for name in rows:
        runs, found = pooled_runs(folders, name)
        if runs:
            results[name], seeds[name] = summarise(runs), found
    if not results:
        return fail(f"no finished run of {', '.join(rows)} in {', '.join(map(str, folders))}", 1)
    text = table(results, seeds)
    (folders[0] / "table.md").write_text(text)
    print(text)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, train_args = args_in[:cut], args_in[cut + 1:]
    p = parser("python -m training.experiments.ablation", __doc__)
    p.add_argument("out", type=Path, help="folder for the runs, the log and table.md")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every row")
    p.add_argument("--more-seeds", nargs="+", type=int, default=[],
                   help="extra seeds for --multi-seed-rows only")
    p.add_argument("--multi-seed-rows", nargs="*", default=["p10", "p10-both", "dense"],
                   choices=list(ROWS), help="rows that also run --more-seeds")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tabulate the run folders already in OUT")
    p.add_argument("--pool", nargs="*", type=Path, default=None, metavar="DIR",
                   help="train nothing: tabulate every <row>-s<seed> run in OUT and these folders "
                        "together (repeated runs of one seed count as separate runs: on CUDA "
                        "they differ)")
    args = p.parse_args(args_in)
    if args.pool is not None:
        return report_pool([args.out, *args.pool], args.rows)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "ablation.log"
    results: dict[str, dict[str, Any]] = {}
    seeds: dict[str, list[int]] = {}
    try:
        for name in args.rows:
            seeds[name] = args.seeds + (args.more_seeds if name in args.multi_seed_rows else [])
            folders = []
            for seed in seeds[name]:
                if args.report_only:
                    folders.append(args.out / f"{name}-s{seed}")
                    continue
                print(f"== {name} seed {seed}", flush=True)
                folders.append(run_row(name, seed, args.out, train_args, log))
            results[name] = summarise(folders)
            (args.out / "table.md").write_text(table(results, seeds))
    except (RuntimeError, OSError, KeyError) as exc:
        return fail(str(exc), 1)
    print(table(results, seeds))
    print(f"wrote {args.out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
