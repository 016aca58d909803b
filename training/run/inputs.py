"""What a run trains and validates on: the training crops with their labels (simulated points,
a point file, dense masks, or rasters + a point layer) and the validation that scores each epoch."""
from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from tqdm import tqdm

from model.class_table import IGNORE_INDEX, ClassTable
from training.config import DEFAULT_POINTS_PER_CLASS, OptionError, TrainConfig
from training.data.options import load_table, open_source
from training.data.sources import PointSupervisedDataset, SampleSource
from training.labels.expansion import PADDING, ExpandedPointDataset, ExpansionConfig, SuperpixelCache
from training.labels.forest import ForestExpander, ForestSamples
from training.labels.fusion import ForestFusion
from training.labels.segments import SegmentSettings
from training.points.files import Points, georeferencing, image_key, read_point_annotations
from training.points.options import Validation
from training.run.distributed import SINGLE, Group
from training.run.evaluate import evaluate_source, predictor
from training.run.metrics import scores

LOG = logging.getLogger(__name__)

if TYPE_CHECKING:  # the point-layer path loads the GIS stack only when it runs
    from training.points.rasters import RasterPointDataset

TrainingSet = Union[PointSupervisedDataset, "RasterPointDataset"]
"""Crops of a dataset with masks (simulated / file points, or dense), or of rasters + a point layer."""



def check_alpha(alpha: list[float] | None, table: ClassTable) -> None:
    """``--alpha`` must give one weight per class of ``table``."""
    if alpha is not None and len(alpha) != table.num_classes:
        raise OptionError(f"--alpha gives {len(alpha)} weights; the class table has "
                          f"{table.num_classes} classes ({', '.join(table.names)})")


def image_names(source: SampleSource) -> dict[str, str]:
    """Every name a point file may use for an image of ``source`` -> its key: the key, the
    image's path relative to the dataset root (``tile1/images/x``, without extension) and
    the bare stem when only one image has it."""
    names = {key: key for key in source.keys}
    root = getattr(source, "root", None)
    if hasattr(source, "image_file") and root is not None:
        stems: dict[str, list[str]] = {}
        for i, key in enumerate(source.keys):
            path = Path(source.image_file(i))
            names.setdefault(image_key(str(path.relative_to(root))), key)
            stems.setdefault(path.stem, []).append(key)
        names |= {stem: keys[0] for stem, keys in stems.items() if len(keys) == 1 and stem not in names}
    return names


def original_size(source: SampleSource, index: int) -> tuple[int, int]:
    """(H, W) of image ``index`` as stored, before ``--scale``."""
    if getattr(source, "scale", 1.0) != 1.0 and hasattr(source, "image_file"):
        from PIL import Image

        with Image.open(source.image_file(index)) as im:
            return im.size[1], im.size[0]
    return source.size(index)


def read_annotations(args: TrainConfig, sources: list[SampleSource], table: ClassTable
                     ) -> dict[str, Points] | None:
    """The ``--point-file``'s points per image key of ``sources`` (training and validation;
    None without a point file).

    An image may be named by its key, its path under the dataset root or its stem. Points are
    in the stored image's pixels (GeoJSON: map coordinates of georeferenced images) and checked
    against its size; with ``--scale`` they move to the resized image's pixels.
    """
    if not args.point_file:
        return None
    names: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    transforms = {}
    for source in sources:
        own = image_names(source)
        index = {k: i for i, k in enumerate(source.keys)}
        names |= own
        sizes |= {name: original_size(source, index[key]) for name, key in own.items()}
        if hasattr(source, "image_file"):
            for name, key in own.items():
                found = georeferencing(source.image_file(index[key]))
                if found is not None:
                    transforms[name] = found
    read = read_point_annotations(args.point_file, table, sizes, transforms)
    out: dict[str, Points] = {}
    for name, points in read.items():
        key = names[name]
        out[key] = np.concatenate([out[key], points]) if key in out else points
    scale = getattr(args, "scale", 1.0)
    if scale != 1.0:
        for key, points in out.items():
            h, w = next(original_size(s, s.keys.index(key)) for s in sources if key in s.keys)
            moved = points.copy()
            moved[:, 0] = np.minimum(np.floor((points[:, 0] + 0.5) * scale), round(h * scale) - 1)
            moved[:, 1] = np.minimum(np.floor((points[:, 1] + 0.5) * scale), round(w * scale) - 1)
            out[key] = moved
    return out


def forest_segments(args: TrainConfig) -> SegmentSettings | None:
    """The regions within which ``--forest-segments`` averages the forest's probabilities."""
    return SegmentSettings(scale=args.forest_segments) if args.forest_segments else None


def training_dataset(args: TrainConfig, source: SampleSource, table: ClassTable,
                     annotations: dict[str, Points] | None = None) -> PointSupervisedDataset:
    """Crops of ``source`` with their labels: points (simulated, or ``annotations`` read from
    a point file) or the dense masks."""
    points_per_class = None if args.dense else args.points_per_class
    if not args.weakly_supervised:
        return PointSupervisedDataset(source, points_per_class, args.seed, args.crop_size,
                                      augment=True, annotations=annotations)
    expansion = (ExpansionConfig(segment_area_px=args.segment_area)
                 if args.expand == "superpixels" else None)
    cache = SuperpixelCache(args.superpixel_cache or Path(args.out) / "superpixels")
    dataset = ExpandedPointDataset(source, points_per_class, args.seed, args.crop_size,
                                   augment=True, annotations=annotations, expansion=expansion,
                                   cache=cache)
    if args.expand == "forest":
        bar = None if args.no_progress else partial(tqdm, unit="img", leave=False)
        expander = ForestExpander(dataset.images_and_labels(), len(table.names),
                                  args.forest_threshold, progress=bar,
                                  refreshable=args.forest_refresh > 0,
                                  segments=forest_segments(args))
        dataset.use_expander(expander)
        stats = expander.stats()
        LOG.info(stats.summary(f"the pixels of {stats.images} images"))
    return dataset


def dense_validation(args: TrainConfig, val_source: SampleSource, table: ClassTable,
                     group: Group = SINGLE, annotations: dict[str, Points] | None = None
                     ) -> Validation:
    """Validation on the dense masks of ``val_source``: in a distributed ``group`` each process
    scores its block of the images and the confusion matrices are summed. Pictures show the
    point file's points (``annotations``) where it has them, else simulated ones."""
    def run(model: torch.nn.Module, device: torch.device, progress: bool,
            pictures: Path | None, max_pictures: int,
            fusion: ForestFusion | None = None) -> dict[str, Any]:
        cm = evaluate_source(predictor(model, device, amp=device.type == "cuda", fusion=fusion),
                             group.share_source(val_source), table, pictures, max_pictures,
                             args.points_per_class or DEFAULT_POINTS_PER_CLASS, args.seed, progress,
                             annotations)
        cm = group.sum(cm)
        result = scores(cm)
        return {"val_miou": result.miou, "val_pixel_accuracy": result.pixel_accuracy,
                "val_iou": result.as_dict(table.names)["iou"], "val_confusion": cm.tolist()}
    return run


def training_data(args: TrainConfig, group: Group = SINGLE
                  ) -> tuple[TrainingSet, Validation, ClassTable, dict[str, Any],
                             ForestSamples | None]:
    """The training dataset, the validation, the class table, what the data options resolved
    to, and what the forest of ``--expand forest`` was fitted on (None without it): rasters + a
    point layer (``--images``), or a dataset with dense masks (``--data``)."""
    if args.images is not None:
        from training.points.run import prepare_points  # GDAL, PROJ and GEOS: only for --points

        given = ClassTable.load(args.classes) if args.classes else None
        points = prepare_points(args, given)
        check_alpha(args.alpha, points.table)
        pad = PADDING if args.weakly_supervised else IGNORE_INDEX
        dataset = points.dataset(args, pad)
        data = points.config() | {"train_images": len(dataset),
                                  "val_images": len(points.validation_rasters()),
                                  "points_per_class": None}
        return (dataset, points.validation(group.device.type == "cuda"), points.table, data,
                points.forest_samples)
    table: ClassTable = load_table(args)
    check_alpha(args.alpha, table)
    train_source = open_source(args, "train", table)
    val_source = open_source(args, "val", table)
    annotations = read_annotations(args, [train_source, val_source], table)
    facts: dict[str, Any] = {"train_images": len(train_source), "val_images": len(val_source)}
    crops = training_dataset(args, train_source, table, annotations)
    expander = getattr(crops, "expander", None)
    samples = None
    if isinstance(expander, ForestExpander):
        facts["forest_labels"] = asdict(expander.stats())
        samples = expander.samples
    return (crops, dense_validation(args, val_source, table, group, annotations), table, facts,
            samples)

