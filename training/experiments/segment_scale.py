"""Which region size helps the forest's map: the forest peer with its probabilities averaged
within Felzenszwalb regions of several scales, fitted and scored on folders that the final
comparison does not use.

For each setting (``--train-dirs`` -> ``--val-dirs``, and the same-scene case on
``--val-dirs``'s own points), the forest peer is fitted on the simulated points (``--seed``) and
each validation photo is mapped plain and averaged within the regions of every scale x
``min_size`` of the grid; mIoU on the dense masks as validation computes it.

    python -m training.experiments.segment_scale --data DUBAI --dataset folders \\
        --classes training/tables/dubai-aerial.json --train-dirs tile1 tile2 \\
        --val-dirs tile3 tile4 --scale 0.5 --out docs/results/forest-segments/scale-tiles1-4.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.cli import parser
from model.class_table import ClassTable
from training.data.options import load_table, open_source
from training.experiments.combine import fit_on_run_points
from training.labels.forest import class_probabilities, pixel_features
from training.labels.segments import SegmentSettings, image_segments, region_blend
from training.run.metrics import confusion_matrix, scores


def grid_miou(options: argparse.Namespace, table: ClassTable, grid: list[SegmentSettings],
              progress: bool, weights: tuple[float, ...] = (1.0,)) -> dict[str, float]:
    """mIoU % of the forest fitted on ``options``' training folders, on its validation folders:
    ``plain``, and ``scale-min_size`` for each region setting of ``grid`` (the region mean
    alone), with ``-w<weight>`` for each other weight of the region mean in
    ``training.labels.segments.region_blend``."""
    train, val = open_source(options, "train", table), open_source(options, "val", table)
    forest = fit_on_run_points(train, options.points_per_class, options.seed)
    k = table.num_classes
    variants = [(f"{g.scale:g}-{g.min_size}" + ("" if w == 1 else f"-w{w:g}"), g, w)
                for g in grid for w in weights]
    matrices = {name: np.zeros((k, k), np.int64) for name in ["plain"] + [v[0] for v in variants]}
    for index in tqdm(range(len(val)), desc="photos", disable=not progress, leave=False):
        sample = val.load(index)
        probs = class_probabilities(forest, pixel_features(sample.image), k)
        matrices["plain"] += confusion_matrix(probs.argmax(0), sample.mask, k)
        regions = {g: image_segments(sample.image, g) for g in grid}
        for name, settings, weight in variants:
            blended = region_blend(probs, regions[settings], weight)
            matrices[name] += confusion_matrix(blended.argmax(0), sample.mask, k)
    return {name: round(100 * float(scores(m).miou), 2) for name, m in matrices.items()}


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.segment_scale", __doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", default="folders")
    p.add_argument("--classes", default=None)
    p.add_argument("--train-dirs", nargs="+", required=True)
    p.add_argument("--val-dirs", nargs="+", required=True)
    p.add_argument("--scale", type=float, default=0.5, help="image scale, as geoseg train")
    p.add_argument("--points-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scales", type=float, nargs="+", default=[100, 300, 600, 1000, 2000])
    p.add_argument("--min-sizes", type=int, nargs="+", default=[20, 50])
    p.add_argument("--weights", type=float, nargs="+", default=[1.0],
                   help="weights of the region mean, (1 - w) x pixel + w x region (1: the mean)")
    p.add_argument("--out", type=Path, required=True, help="result JSON")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    grid = [SegmentSettings(scale=s, min_size=m) for s in args.scales for m in args.min_sizes]
    base = {k: getattr(args, k) for k in ("data", "dataset", "classes", "scale",
                                          "points_per_class", "seed")}
    table = load_table(argparse.Namespace(**base, train_dirs=args.train_dirs, val_dirs=args.val_dirs))
    settings = {"across": (args.train_dirs, args.val_dirs), "same_scene": (args.val_dirs, args.val_dirs)}
    result: dict[str, object] = {"arguments": {k: v for k, v in vars(args).items() if k != "out"}}
    for name, (train_dirs, val_dirs) in settings.items():
        options = argparse.Namespace(**base, train_dirs=train_dirs, val_dirs=val_dirs)
        result[name] = grid_miou(options, table, grid, not args.no_progress, tuple(args.weights))
        print(name, json.dumps(result[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
