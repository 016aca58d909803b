"""The network and the forest together: does averaging their class probabilities beat both?

For a finished ``geoseg train`` run on a dataset with masks (simulated points), this refits the
forest peer on exactly the run's training points (same images, ``--points-per-class`` and
``--seed``), then scores on the run's validation images: the network alone, the forest alone,
and the mean of their probabilities (optionally with the network's left-right flip averaged in),
each also averaged within the photo's regions (``*_segments``, :mod:`training.labels.segments`).
The network's probabilities are the blended tile scores that validation, the server and
``geoseg predict`` take the argmax of, so its row equals the run's final validation mIoU.

    python -m training.experiments.combine RUN_FOLDER --classes TABLE.json [--checkpoint last.pt]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import parser
from handler.inference import HandlerConfig, tile_predictor
from handler.tiling import blended_scores
from training.data.options import load_table, open_source
from training.data.sources import PointSupervisedDataset, SampleSource
from training.labels.forest import (
    ForestSettings,
    class_probabilities,
    features_at,
    fit_forest,
    pixel_features,
)
from training.labels.segments import image_segments, segment_mean
from training.run.evaluate import load_for_evaluation
from training.run.metrics import confusion_matrix, scores


def run_options(run: Path) -> argparse.Namespace:
    """The data options a run was trained with, from its ``metrics.json``."""
    config = json.loads((run / "metrics.json").read_text())["config"]
    return argparse.Namespace(**{k: config.get(k) for k in (
        "data", "dataset", "classes", "train_dirs", "val_dirs", "scale", "points_per_class",
        "seed")})


def fit_on_run_points(source: SampleSource, points_per_class: int, seed: int) -> Any:
    """The forest peer fitted on the points ``geoseg train`` simulated on ``source`` (its
    ``random_state`` the seed, as ``geoseg peer-forest --seed``)."""
    dataset = PointSupervisedDataset(source, points_per_class, seed, crop=None, augment=False)
    xs, ys = [], []
    for index in range(len(source)):
        sample = source.load(index)
        x, y = features_at(pixel_features(sample.image), dataset.points(index, sample.mask))
        xs.append(x)
        ys.append(y)
    return fit_forest(np.concatenate(xs), np.concatenate(ys), ForestSettings(n_jobs=1, random_state=seed))


@torch.no_grad()
def network_probabilities(model: torch.nn.Module, image: np.ndarray, flip: bool) -> np.ndarray:
    """(K, H, W) class probabilities of the network on the (H, W, 3) uint8 ``image``, tiled and
    blended exactly as validation, the server and ``geoseg predict`` do (``HandlerConfig()``);
    with ``flip``, averaged with those of the left-right mirrored image."""
    config = HandlerConfig()
    predict = tile_predictor(model, torch.device("cpu"), scores=True)

    def probs_of(picture: np.ndarray) -> np.ndarray:
        (probs,) = blended_scores([np.ascontiguousarray(picture)], predict, config.tile_size,
                                  config.tile_overlap, 1)
        return probs
    probs = probs_of(image)
    if flip:
        probs = (probs + probs_of(image[:, ::-1])[:, :, ::-1]) / 2
    return probs


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.combine", __doc__)
    p.add_argument("run", type=Path, help="a finished geoseg train run folder")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint in the run folder")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: <run>/combine.json)")
    p.add_argument("--classes", default=None,
                   help="the run's class table JSON (metrics.json keeps the names only)")
    args = p.parse_args(argv)
    options = run_options(args.run)
    options.classes = args.classes
    table = load_table(options)
    train_source, val_source = open_source(options, "train", table), open_source(options, "val", table)
    forest = fit_on_run_points(train_source, options.points_per_class, options.seed)
    model, _ = load_for_evaluation(args.run / args.checkpoint, torch.device("cpu"))
    k = table.num_classes
    rows = {name: np.zeros((k, k), np.int64) for name in
            ("network", "network_flip", "forest", "mean", "mean_flip", "network_segments",
             "forest_segments", "mean_segments")}
    for index in range(len(val_source)):
        sample = val_source.load(index)
        net = network_probabilities(model, sample.image, flip=False)
        net_flip = network_probabilities(model, sample.image, flip=True)
        tree = class_probabilities(forest, pixel_features(sample.image), k)
        regions = image_segments(sample.image)
        for name, probs in (("network", net), ("network_flip", net_flip), ("forest", tree),
                            ("mean", (net + tree) / 2), ("mean_flip", (net_flip + tree) / 2),
                            ("network_segments", segment_mean(net, regions)),
                            ("forest_segments", segment_mean(tree, regions)),
                            ("mean_segments", segment_mean((net + tree) / 2, regions))):
            rows[name] += confusion_matrix(probs.argmax(0), sample.mask, k)
    result = {name: float(scores(cm).miou) for name, cm in rows.items()}
    out = args.out or args.run / "combine.json"
    out.write_text(json.dumps({"run": args.run.name, "checkpoint": args.checkpoint,
                               "miou": result}, indent=2) + "\n")
    print("  ".join(f"{name} {100 * v:.2f}%" for name, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
