"""Pictures of the supervision ablation: what each labelling gives on validation images.

    python -m training.experiments.ablation_pictures --plain RUN_A --best RUN_B --out docs/x.png \\
        --images 0 4 --data ... (the dataset options of the runs)

One row per validation image: image | clicked points (``--points-per-class`` simulated as the
runs' pictures show them) | the points expanded over SLIC superpixels (``--expand superpixels``)
| prediction of ``--plain`` | prediction of ``--best`` | ground truth; the class legend below.
Predictions come from each run's ``last.pt`` (the final epoch, the honest figure of the ablation
table).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.cli import at_least, fail, parser
from model.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from training.data.options import add_data_args, load_table, open_source
from training.data.sources import DatasetError, to_tensors
from training.labels.expansion import ExpansionConfig, expand_points
from training.points.files import points_to_label, simulate_points
from training.run.evaluate import predictor
from training.run.pictures import draw_points, titled_panels, with_legend

TITLES = ("image", "points", "expanded labels", "plain pfCE", "best", "ground truth")


def predictions(run: Path, image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 classes that the final-epoch network of ``run`` predicts for ``image``."""
    model, _ = model_from_checkpoint(read_checkpoint(run / "last.pt"), run / "last.pt")
    x, _ = to_tensors(image, np.zeros(image.shape[:2], np.uint8))
    return predictor(model.eval(), torch.device("cpu"))(x.unsqueeze(0))[0].numpy().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.ablation_pictures", __doc__)
    add_data_args(p)
    p.add_argument("--plain", type=Path, required=True, help="run folder of the plain pfCE row")
    p.add_argument("--best", type=Path, required=True, help="run folder of the best row")
    p.add_argument("--best-title", default="best", help="title of the best row's panel")
    p.add_argument("--images", type=int, nargs="+", default=[0, 1],
                   help="indices of the validation images to show")
    p.add_argument("--points-per-class", type=at_least(1), default=10)
    p.add_argument("--seed", type=int, default=0, help="the runs' --seed (which points)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args: argparse.Namespace = p.parse_args(argv)
    try:
        table = load_table(args)
        source = open_source(args, "val", table)
        rows = []
        for index in args.images:
            sample = source.load(index)
            points = simulate_points(sample.mask, args.points_per_class, [args.seed, index])
            sparse = points_to_label(points, sample.mask.shape)
            expanded = expand_points(sample.image, sparse, ExpansionConfig()).labels
            panels = [sample.image, draw_points(sample.image, points, table),
                      table.colorize(expanded), table.colorize(predictions(args.plain, sample.image)),
                      table.colorize(predictions(args.best, sample.image)),
                      table.colorize(sample.mask)]
            rows.append(titled_panels(panels, (*TITLES[:4], args.best_title, TITLES[5])))
    except (DatasetError, CheckpointError, IndexError) as exc:
        return fail(str(exc))
    width = max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows) + 4 * (len(rows) - 1), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        out[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0] + 4
    out = with_legend(out, table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(args.out)
    print(f"wrote {args.out} ({out.shape[1]}x{out.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
