"""The forest peer: what a GIS analyst's own tool makes of the same clicked points.

ilastik's pixel classification, QGIS SCP, Orfeo ToolBox and Earth Engine all offer the same
classical recipe: per-pixel multi-scale filter features (``skimage.feature.
multiscale_basic_features`` on RGB: intensity, edges and texture at 6 scales, sigma 0.7-16 px)
and a random forest (scikit-learn, 200 trees) trained on exactly the clicked pixels. This command
trains it on the points a ``geoseg train`` run with the same options and ``--seed`` trains on,
predicts the validation images whole, and scores them as GeoSeg's validation does
(``training.run.evaluate.evaluate_source``: dense masks, pixels labelled 255 left out, mIoU over the
classes present in truth or prediction). It writes ``<out>/forest.json``.

Simulated points (the same data options as ``geoseg train``):

    geoseg peer-forest --data DUBAI_DIR --dataset folders --classes training/tables/dubai-aerial.json \\
        --train-dirs tile1 tile2 tile3 tile4 --val-dirs tile5 tile6 --scale 0.5 \\
        --points-per-class 10 --seed 0 --out runs/forest

``--same-scene``: train on the points of the validation images themselves and score those
images (the usual case: a user clicks on the photo they want mapped).

A point layer clicked on rasters (as ``geoseg train --images ... --points ...``; the points are
matched and split as there, the rasters' training points get their features from the windows
validation predicts, each with at least a tile overlap of context, and validation is
``training.points.evaluation``'s):

    geoseg peer-forest --images ortho/*.tif --points clicks.gpkg --class-field landcover \\
        --val-images val/*.tif --val-masks val_masks/*.png --out runs/forest
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from common.cli import at_least, blocked_path, fail, parser, refuse_overwrite, show_messages, write_json
from model.class_table import ClassTable, ClassTableError
from training.data.options import add_data_args, load_table, open_source
from training.data.sources import DatasetError, PointSupervisedDataset, SampleSource, image_from_tensor
from training.labels.forest import (
    FeatureStack,
    ForestSettings,
    Timings,
    features_at,
    fit_forest,
    pixel_features,
)
from training.points.files import Points
from training.points.options import PointInputError, add_point_args, point_arg_problem
from training.run.evaluate import evaluate_source
from training.run.metrics import scores

RESULT_FILE = "forest.json"
DEFAULT_POINTS_PER_CLASS = 10
"""As ``geoseg train``'s default."""


class ForestPredictor:
    """A fitted forest as a ``training.run.evaluate.Predictor``: (1, 3, H, W) float32 in [0, 1] ->
    (1, H, W) int64 class ids; it adds its seconds to ``timings``."""

    def __init__(self, forest: Any, stack: FeatureStack, timings: Timings) -> None:
        self.forest, self.stack, self.timings = forest, stack, timings

    def __call__(self, x: torch.Tensor, margin: Optional[int] = None) -> torch.Tensor:
        """``margin`` is ignored: the forest's features see no tiles."""
        image = image_from_tensor(x[0])
        t0 = time.perf_counter()
        features = pixel_features(image, self.stack)
        t1 = time.perf_counter()
        ids = self.forest.predict(features.reshape(-1, features.shape[-1]))
        self.timings.features += t1 - t0
        self.timings.predict += time.perf_counter() - t1
        return torch.from_numpy(ids.reshape(1, *image.shape[:2]).astype(np.int64))


def simulated_points(source: SampleSource, points_per_class: int, seed: int) -> PointSupervisedDataset:
    """The training points of ``source`` exactly as ``geoseg train --points-per-class N --seed S``
    simulates them (image ``i`` gets ``simulate_points(mask, N, [S, i])``, through the same
    dataset class); read them with ``.points(i, mask)``."""
    return PointSupervisedDataset(source, points_per_class, seed, crop=None, augment=False)


def samples_from_source(source: SampleSource, points_per_class: int, seed: int, stack: FeatureStack,
                        timings: Timings, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Features (K, F) float32 and class ids (K,) int64 of the simulated points of every image
    of ``source`` (see :func:`simulated_points`)."""
    dataset = simulated_points(source, points_per_class, seed)
    xs, ys = [], []
    for index in tqdm(range(len(source)), desc="features", unit="img", disable=not progress,
                      leave=False):
        sample = source.load(index)
        points = dataset.points(index, sample.mask)
        t0 = time.perf_counter()
        x, y = features_at(pixel_features(sample.image, stack), points)
        timings.features += time.perf_counter() - t0
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def samples_from_rasters(rasters: Sequence[Path], points: Sequence[Points], scaling: Any,
                         stack: FeatureStack, timings: Timings, progress: bool = True
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Features (K, F) float32 and class ids (K,) int64 of the training ``points[j]`` (K_j, 3)
    (row, col, class id) of ``rasters[j]``, read as the network sees them (``scaling``: the run's
    ``handler.scaling.BandScaling`` or None). A raster of up to 1 Mpx is read whole, a larger
    one in the windows validation predicts (``training.points.evaluation.windows_to_predict``:
    ``geoseg predict``'s windows holding points, each read with at least a tile overlap of
    context around what it keeps)."""
    from handler.inference import HandlerConfig
    from scene.source import SceneSource
    from training.points.evaluation import windows_to_predict
    from training.points.rasters import points_in_window

    xs, ys = [], []
    pairs = [(r, p) for r, p in zip(rasters, points) if len(p)]
    for raster, raster_points in tqdm(pairs, desc="features", unit="raster", disable=not progress,
                                      leave=False):
        with SceneSource(raster, scaling) as source:
            for window in windows_to_predict(source.height, source.width, raster_points, False,
                                             HandlerConfig()):
                keep, read = window.keep, window.read
                inside = points_in_window(raster_points, keep.y0, keep.x0, keep.y1 - keep.y0,
                                          keep.x1 - keep.x0)
                bands, _ = source.read(read)
                image = source.rgb(bands)
                t0 = time.perf_counter()
                offset = [keep.y0 - read.y0, keep.x0 - read.x0, 0]
                shifted = inside + np.array(offset, dtype=np.int64)
                x, y = features_at(pixel_features(image, stack), shifted)
                timings.features += time.perf_counter() - t0
                xs.append(x)
                ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@dataclass
class ForestResult:
    """Scores and facts of one forest run, as written to ``forest.json``."""

    scores: dict[str, Any]
    confusion: list[list[int]]
    training_points: int
    points_per_class: dict[str, int]
    timings: Timings
    extra: dict[str, Any] = field(default_factory=dict)


def run_simulated(args: argparse.Namespace, table: ClassTable, stack: FeatureStack,
                  settings: ForestSettings, progress: bool) -> ForestResult:
    """Train on the simulated points of the training images (of the validation images with
    ``--same-scene``) and score the validation images' dense masks."""
    val_source = open_source(args, "val", table)
    train_source = val_source if args.same_scene else open_source(args, "train", table)
    timings = Timings()
    x, y = samples_from_source(train_source, args.points_per_class, args.seed, stack, timings,
                               progress)
    forest = fit_forest(x, y, settings, timings)
    cm = evaluate_source(ForestPredictor(forest, stack, timings), val_source, table,
                         progress=progress)
    return ForestResult(scores(cm).as_dict(table.names), cm.tolist(), len(y),
                        _counts(y, table), timings,
                        {"train_images": len(train_source), "val_images": len(val_source)})


def run_point_layer(args: argparse.Namespace, table: Optional[ClassTable], stack: FeatureStack,
                    settings: ForestSettings, progress: bool) -> tuple[ForestResult, ClassTable]:
    """Train on a point layer's training points (matched and split as ``geoseg train`` does)
    and score as its validation does: the held-out points, and the ``--val-masks``."""
    from training.points.evaluation import validate_points
    from training.points.run import prepare_points

    data = prepare_points(args, table)
    split = data.split
    rasters, train = split.rasters, split.train
    if args.same_scene:
        train = tuple(np.concatenate([t, v]) for t, v in zip(split.train, split.val))
    timings = Timings()
    x, y = samples_from_rasters(rasters, train, data.scaling, stack, timings, progress)
    forest = fit_forest(x, y, settings, timings)
    found = validate_points(ForestPredictor(forest, stack, timings), data.validation_rasters(),
                            data.table, data.scaling, progress=progress)
    record = found.record(data.table)
    dense: dict[str, Any]
    confusion: list[list[int]]
    if found.dense is not None:
        dense, confusion = scores(found.dense).as_dict(data.table.names), found.dense.tolist()
    else:
        dense, confusion = {"miou": None, "pixel_accuracy": None, "iou": {}}, []
    points = {"miou": record["val_miou"], "pixel_accuracy": record["val_pixel_accuracy"],
              "iou": record["val_iou"], "points": record["val_points"]}
    return ForestResult(dense, confusion, len(y), _counts(y, data.table), timings,
                        {"point_scores": points} | data.config()), data.table


def _counts(y: np.ndarray, table: ClassTable) -> dict[str, int]:
    return {name: int(n) for name, n in zip(table.names, np.bincount(y, minlength=table.num_classes))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("geoseg peer-forest", __doc__)
    add_data_args(p, required=False)
    add_point_args(p)
    p.add_argument("--out", type=Path, required=True,
                   help=f"folder for {RESULT_FILE} (a geoseg train run folder is fine)")
    p.add_argument("--points-per-class", type=at_least(1), default=None,
                   help="points simulated per class present in each training image, with --data "
                        f"(default: {DEFAULT_POINTS_PER_CLASS})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the simulated points (as geoseg train's) and of the forest")
    p.add_argument("--same-scene", action="store_true",
                   help="train on the points of the validation images themselves (point layer: "
                        "on the validation points too) and score those images")
    forest = p.add_argument_group("forest", "defaults: the recipe of the GIS tools")
    forest.add_argument("--trees", type=at_least(1), default=ForestSettings.n_estimators,
                        help="trees in the forest")
    forest.add_argument("--jobs", type=int, default=ForestSettings.n_jobs,
                        help="processes of the forest (-1: every core)")
    forest.add_argument("--sigma-min", type=at_least(0.1, float), default=FeatureStack.sigma_min,
                        help="smallest filter scale, pixels")
    forest.add_argument("--sigma-max", type=at_least(0.1, float), default=FeatureStack.sigma_max,
                        help="largest filter scale, pixels")
    forest.add_argument("--num-sigma", type=at_least(1), default=FeatureStack.num_sigma,
                        help="filter scales between them (log-spaced)")
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {RESULT_FILE}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    # the point-layer checks of geoseg train, for options a forest run does not have
    args.dense, args.point_file, args.expand, args.crop_size = False, None, "none", 256
    problem = point_arg_problem(args)
    if problem:
        p.error(problem)
    if args.images is None and args.data is None:
        p.error("give --data (images with dense masks), or --images and --points")
    if args.data is not None and args.points_per_class is None:
        args.points_per_class = DEFAULT_POINTS_PER_CLASS
    if args.sigma_min > args.sigma_max:
        p.error(f"--sigma-min {args.sigma_min} is above --sigma-max {args.sigma_max}")
    return args


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """Versions of the libraries the result depends on."""
    import platform
    from importlib.metadata import version

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": version("scikit-learn"), "scikit-image": version("scikit-image")}


def summary_line(result: ForestResult) -> str:
    """One line: mIoU, pixel accuracy, training points and seconds."""
    s, t = result.scores, result.timings
    head = ("no dense masks" if s["miou"] is None
            else f"mIoU {100 * s['miou']:.2f}%  pixel accuracy {100 * s['pixel_accuracy']:.2f}%")
    if "point_scores" in result.extra and result.extra["point_scores"]["miou"] is not None:
        head += f"  (held-out points: mIoU {100 * result.extra['point_scores']['miou']:.2f}%)"
    return (f"forest: {head}  from {result.training_points} training points; features "
            f"{t.features:.1f} s, fit {t.fit:.1f} s, predict {t.predict:.1f} s")


def main(argv: list[str] | None = None) -> int:
    show_messages()
    args = parse_args(argv)
    target = args.out / RESULT_FILE
    refusal = blocked_path(target) or refuse_overwrite(target, args.overwrite)
    if refusal:
        return fail(refusal)
    stack = FeatureStack(sigma_min=args.sigma_min, sigma_max=args.sigma_max,
                         num_sigma=args.num_sigma)
    settings = ForestSettings(n_estimators=args.trees, n_jobs=args.jobs, random_state=args.seed)
    progress = not args.no_progress
    start = time.perf_counter()
    try:
        table = load_table(args) if args.data is not None or args.classes else None
        if args.images is None:
            assert table is not None
            result = run_simulated(args, table, stack, settings, progress)
        else:
            result, table = run_point_layer(args, table, stack, settings, progress)
    except (DatasetError, ClassTableError, PointInputError, OSError) as exc:
        return fail(str(exc))
    record = {
        "setting": ("same-scene" if args.same_scene else "train->val")
                   + (" (point layer)" if args.images else " (simulated points)"),
        **result.scores,
        "training_points": result.training_points,
        "training_points_per_class": result.points_per_class,
        "seconds": {"features": round(result.timings.features, 2),
                    "fit": round(result.timings.fit, 2),
                    "predict": round(result.timings.predict, 2),
                    "total": round(time.perf_counter() - start, 2)},
        "features": {"function": "skimage.feature.multiscale_basic_features",
                     "channel_axis": -1, **asdict(stack)},
        "forest": {"class": "sklearn.ensemble.RandomForestClassifier", **asdict(settings)},
        "classes": list(table.names),
        "confusion": result.confusion,
        **result.extra,
        "versions": versions(),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "arguments": {k: _plain(v) for k, v in sorted(vars(args).items())
                      if k not in ("dense", "point_file", "expand", "crop_size")},
    }
    print(summary_line(result))
    write_json(target, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
