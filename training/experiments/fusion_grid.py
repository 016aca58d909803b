"""Which mix of network and forest, and which regions, make the best map of a finished run?

For a run whose checkpoint carries its forest samples (``geoseg train --expand forest``, or
``training.experiments.attach_forest``), scores on the run's validation images the map of
:mod:`training.labels.fusion` for every number of network views, forest weight, Felzenszwalb
scale and region weight asked for, and for forests of fewer trees (``--trees``).

``--views``: the network's probabilities averaged over 1, 2, 4 or 8 flips and turns of the
image (:data:`DIHEDRAL`). ``--scales``: a scale, or several joined by ``+``
(``50+100+200``: the mean of the region means of each). ``--region-weights``: 1 averages within
regions; below 1 blends each pixel with its region's mean
(``training.labels.segments.region_blend``). The network's and the forest's probabilities are
computed once per image. Meant for choosing the shipped settings on images that are not the ones
reported (dubai-aerial tiles 3-4).

    python -m training.experiments.fusion_grid RUN --classes TABLE.json [--checkpoint last.pt]
"""
from __future__ import annotations

import copy
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import fail, parser
from training.data.options import load_table, open_source
from training.experiments.combine import network_probabilities, run_options
from training.labels.forest import image_probabilities
from training.labels.fusion import fuse, mix
from training.labels.segments import SegmentSettings, image_segments
from training.run.evaluate import load_with_forest
from training.run.metrics import confusion_matrix, scores

DIHEDRAL = ((False, False, False), (False, False, True), (False, True, False), (False, True, True),
            (True, False, False), (True, False, True), (True, True, False), (True, True, True))
"""The 8 views of an image under flips and 90-degree turns, as (transpose, flip rows, flip
columns): the first 2 add the left-right mirror, the first 4 both mirrors (and so the half
turn), all 8 the quarter turns too."""


def view_probabilities(image: np.ndarray, probabilities_of: Callable[[np.ndarray], np.ndarray],
                       views: int) -> Iterator[np.ndarray]:
    """``probabilities_of`` (an (h, w, 3) image to its (K, h, w) class probabilities) on each of
    the first ``views`` (1, 2, 4 or 8) :data:`DIHEDRAL` views of ``image`` (H, W, 3), each
    turned back onto the image's pixels: (K, H, W) arrays, in that order."""
    if views not in (1, 2, 4, 8):
        raise ValueError(f"views must be 1, 2, 4 or 8, not {views}")
    for transpose, flip_rows, flip_cols in DIHEDRAL[:views]:
        rows, cols = slice(None, None, -1 if flip_rows else 1), slice(None, None, -1 if flip_cols else 1)
        view = (image.transpose(1, 0, 2) if transpose else image)[rows, cols]
        probs = probabilities_of(np.ascontiguousarray(view))[:, rows, cols]
        yield probs.transpose(0, 2, 1) if transpose else probs


def region_scales(text: str) -> tuple[float, ...]:
    """``"100"`` -> (100.0,); ``"50+100+200"`` -> (50.0, 100.0, 200.0)."""
    return tuple(float(part) for part in text.split("+"))


def scale_name(scales: tuple[float, ...]) -> float | str:
    """A single scale as its number (the rows' older form), several joined by ``+``."""
    return scales[0] if len(scales) == 1 else "+".join(f"{s:g}" for s in scales)


def first_trees(forest: Any, trees: int) -> Any:
    """The forest of the first ``trees`` trees of a fitted ``RandomForestClassifier``: the forest
    scikit-learn fits with ``n_estimators=trees`` and the same ``random_state`` (each tree's seed
    is drawn in turn from it)."""
    if trees > len(forest.estimators_):
        raise ValueError(f"the forest has {len(forest.estimators_)} trees, not {trees}")
    fewer = copy.copy(forest)
    fewer.estimators_, fewer.n_estimators = forest.estimators_[:trees], trees
    return fewer


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.fusion_grid", __doc__)
    p.add_argument("run", type=Path, help="a finished geoseg train run folder")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint in the run folder")
    p.add_argument("--classes", default=None, help="the run's class table JSON")
    p.add_argument("--views", type=int, nargs="+", default=[1], choices=[1, 2, 4, 8])
    p.add_argument("--trees", type=int, nargs="+", default=None,
                   help="forests of the first N trees of the run's forest (default: all of them)")
    p.add_argument("--forest-weights", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--scales", type=region_scales, nargs="+", default=[(50.0,), (100.0,), (200.0,)])
    p.add_argument("--region-weights", type=float, nargs="+", default=[0.75, 1.0])
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: <run>/fusion-grid.json)")
    args = p.parse_args(argv)
    options = run_options(args.run)
    options.classes = args.classes
    table = load_table(options)
    model, _, samples = load_with_forest(args.run / args.checkpoint, torch.device("cpu"))
    if samples is None:
        return fail(f"{args.run / args.checkpoint}: no forest samples (attach_forest adds them)")
    forest = samples.fit()
    trees = args.trees or [len(forest.estimators_)]
    forests = {n: first_trees(forest, n) for n in trees}
    source = open_source(options, "val", table)
    k = table.num_classes
    grid = list(itertools.product(trees, args.views, args.forest_weights, args.scales,
                                  args.region_weights))
    cms = {key: np.zeros((k, k), np.int64) for key in grid}
    plain = {(n, v, w): np.zeros((k, k), np.int64)
             for n in trees for v in args.views for w in [0.0, *args.forest_weights, 1.0]}
    for index in range(len(source)):
        sample = source.load(index)
        nets, total = {}, np.zeros(0, np.float32)
        for n, probs in enumerate(view_probabilities(
                sample.image, lambda view: network_probabilities(model, view, flip=False),
                max(args.views)), start=1):
            total = probs.astype(np.float32) if n == 1 else total + probs
            if n in args.views:
                nets[n] = total / n
        tree = {n: image_probabilities(f, sample.image, k, samples.stack) for n, f in forests.items()}
        layers = {s: image_segments(sample.image, SegmentSettings(scale=s))
                  for s in {s for scales in args.scales for s in scales}}
        for n, v, w in plain:
            plain[(n, v, w)] += confusion_matrix(mix(nets[v], tree[n], w).argmax(0), sample.mask, k)
        for n, v, w, scales, r in grid:
            fused = fuse(nets[v], tree[n], [layers[s] for s in scales], w, r)
            cms[(n, v, w, scales, r)] += confusion_matrix(fused.argmax(0), sample.mask, k)
    rows = [{"trees": n, "views": v, "forest_weight": w, "scale": scale_name(s), "region_weight": r,
             "miou": float(scores(cm).miou)} for (n, v, w, s, r), cm in cms.items()]
    rows += [{"trees": n, "views": v, "forest_weight": w, "scale": None, "region_weight": 0.0,
              "miou": float(scores(cm).miou)} for (n, v, w), cm in plain.items()]
    out = args.out or args.run / "fusion-grid.json"
    out.write_text(json.dumps({"run": args.run.name, "checkpoint": args.checkpoint, "rows": rows},
                              indent=2) + "\n")
    for row in sorted(rows, key=lambda r: -r["miou"])[:8]:
        print(f"trees {row['trees']}  views {row['views']}  forest {row['forest_weight']:.2f}  "
              f"scale {row['scale']}  region weight {row['region_weight']:.2f}: "
              f"mIoU {100 * row['miou']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
