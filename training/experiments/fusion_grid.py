"""Which mix of network and forest, and which regions, make the best map of a finished run?

For a run whose checkpoint carries its forest samples (``geoseg train --expand forest``, or
``training.experiments.attach_forest``), scores on the run's validation images the map of
:mod:`training.labels.fusion` for every forest weight, Felzenszwalb scale and region weight
asked for (``--region-weights``: 1 averages within regions, as the shipped map does; below 1
blends each pixel with its region's mean, ``training.labels.segments.region_blend``). The
network's and the forest's probabilities are computed once per image. Meant for choosing the
shipped settings on images that are not the ones reported (dubai-aerial tiles 3-4).

    python -m training.experiments.fusion_grid RUN --classes TABLE.json [--checkpoint last.pt]
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common.cli import fail, parser
from training.data.options import load_table, open_source
from training.experiments.combine import network_probabilities, run_options
from training.labels.forest import image_probabilities
from training.labels.fusion import fuse
from training.labels.segments import SegmentSettings, image_segments
from training.run.evaluate import load_with_forest
from training.run.metrics import confusion_matrix, scores


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.fusion_grid", __doc__)
    p.add_argument("run", type=Path, help="a finished geoseg train run folder")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint in the run folder")
    p.add_argument("--classes", default=None, help="the run's class table JSON")
    p.add_argument("--forest-weights", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--scales", type=float, nargs="+", default=[50, 100, 200])
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
    source = open_source(options, "val", table)
    k = table.num_classes
    grid = list(itertools.product(args.forest_weights, args.scales, args.region_weights))
    cms = {key: np.zeros((k, k), np.int64) for key in grid}
    plain = {w: np.zeros((k, k), np.int64) for w in [0.0, *args.forest_weights, 1.0]}
    for index in range(len(source)):
        sample = source.load(index)
        net = network_probabilities(model, sample.image, flip=False)
        tree = image_probabilities(forest, sample.image, k, samples.stack)
        regions = {s: image_segments(sample.image, SegmentSettings(scale=s)) for s in args.scales}
        for w in plain:
            plain[w] += confusion_matrix(((1 - w) * net + w * tree).argmax(0), sample.mask, k)
        for w, s, r in grid:
            fused = fuse(net, tree, regions[s], w, r)
            cms[(w, s, r)] += confusion_matrix(fused.argmax(0), sample.mask, k)
    rows = [{"forest_weight": w, "scale": s, "region_weight": r, "miou": float(scores(cm).miou)}
            for (w, s, r), cm in cms.items()]
    rows += [{"forest_weight": w, "scale": None, "region_weight": 0.0, "miou": float(scores(cm).miou)}
             for w, cm in plain.items()]
    out = args.out or args.run / "fusion-grid.json"
    out.write_text(json.dumps({"run": args.run.name, "checkpoint": args.checkpoint, "rows": rows},
                              indent=2) + "\n")
    for row in sorted(rows, key=lambda r: -r["miou"])[:8]:
        print(f"forest {row['forest_weight']:.2f}  scale {row['scale']}  region weight "
              f"{row['region_weight']:.2f}: mIoU {100 * row['miou']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
