"""Give a run trained before checkpoints kept their forest the samples of that forest.

``geoseg train --expand forest`` now keeps what its forest was fitted on in every checkpoint
(and ``geoseg export`` in the model), so that ``geoseg evaluate`` and ``geoseg predict`` draw
the map of network and forest together. For an older run on a dataset with masks and simulated
points (``--points-per-class``), this rebuilds those samples exactly as the run's training did
(the same images, clicks and feature stack; the forest settings of ``geoseg train``) and writes
them into its checkpoints.

    python -m training.experiments.attach_forest RUN_FOLDER --classes TABLE.json
"""
from __future__ import annotations

import sys
from pathlib import Path

from common.cli import fail, parser
from model.artifact import FOREST_SAMPLES
from model.checkpoint import read_checkpoint, save_checkpoint
from training.data.options import load_table, open_source
from training.experiments.combine import run_options
from training.labels.expansion import ExpandedPointDataset
from training.labels.forest import click_samples


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.attach_forest", __doc__)
    p.add_argument("run", type=Path, help="a finished geoseg train run folder")
    p.add_argument("--checkpoints", nargs="+", default=["last.pt", "best.pt"],
                   help="checkpoints of the run folder to write the samples into")
    p.add_argument("--classes", default=None,
                   help="the run's class table JSON (metrics.json keeps the names only)")
    args = p.parse_args(argv)
    options = run_options(args.run)
    if not options.points_per_class:
        return fail(f"{args.run}: not a run on simulated points (--points-per-class)")
    options.classes = args.classes
    source = open_source(options, "train", load_table(options))
    dataset = ExpandedPointDataset(source, options.points_per_class, options.seed, crop=None,
                                   augment=False, expansion=None)
    samples = click_samples(dataset.images_and_labels())
    for name in args.checkpoints:
        path = args.run / name
        if path.is_file():
            save_checkpoint(path, read_checkpoint(path) | {FOREST_SAMPLES: samples.to_bytes()})
            print(f"{path}: forest samples of {len(samples.y)} clicks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
