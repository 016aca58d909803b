"""Train a GeoSeg segmenter from sparse point labels (or dense masks, for comparison).

The main way: rasters of any size and the point layer clicked on them in QGIS, no masks
(``--images``, ``--points``; see training/points/run.py). Points are reprojected to the rasters,
a share is held out by spatial blocks, and every epoch is scored at the held-out points (and on
dense masks when ``--val-masks`` gives them):

    geoseg train --images ortho/*.tif --points clicks.gpkg --class-field landcover --out runs/mine

For experiments, points are simulated from the dense masks of a dataset (``--data``,
``--points-per-class N``, fixed per image and seed) or read from a point file (``--point-file``:
CSV, GeoJSON, or a folder of sparse PNGs), and every epoch is evaluated on the dense validation
masks. The run folder gets ``last.pt``, ``best.pt`` (by validation mIoU: the point estimate on a
point-layer run), ``metrics.json`` / ``metrics.csv``, and ``pictures/`` (image | points |
prediction | ground truth per validation image). A folder that already holds a run is continued
with ``--resume`` or replaced with ``--overwrite``, never silently.

    python -m training.train --data data/synthetic --out runs/demo --points-per-class 10

Data-parallel over N processes (DDP; NCCL with one GPU each, or gloo on the CPU; rank 0 alone
prints and writes; see docs/distributed.md):

    torchrun --nproc-per-node N -m training.train ...      (or: geoseg train --nproc N ...)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.allocator import keep_freed_memory
from common.cli import at_least, existing_path, fail, parser, positive, warn
from model.artifact import BAND_SCALING
from model.builder import ARCHITECTURES, PretrainedWeightsError, build_model
from model.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from model.class_table import IGNORE_INDEX, ClassTable, ClassTableError
from training.data.options import add_data_args, load_table, open_source
from training.data.sources import DatasetError, PointSupervisedDataset, SampleSource, epoch_draws
from training.labels.expansion import PADDING, ExpandedPointDataset, ExpansionConfig, SuperpixelCache
from training.labels.forest import FOREST_THRESHOLD, ForestExpander
from training.labels.self_training import (
    PSEUDO_START,
    PSEUDO_THRESHOLD,
    PSEUDO_WEIGHT,
    TEACHER_DECAY,
    SelfTraining,
    Teacher,
    pseudo_weight_for,
)
from training.losses.focal import PartialFocalCELoss
from training.losses.weak import EXPAND_WEIGHT, WeakSupervisionLoss
from training.points.files import PointFileError, Points, georeferencing, image_key, read_point_annotations
from training.points.options import PointInputError, Validation, add_point_args, point_arg_problem
from training.run.device import DeviceError, resolve_device
from training.run.distributed import SINGLE, DistributedError, Group, join, launch, under_torchrun
from training.run.evaluate import evaluate_source, predictor
from training.run.metrics import scores

if TYPE_CHECKING:  # the point-layer path loads the GIS stack only when it runs
    from training.points.rasters import RasterPointDataset

AUX_WEIGHT = 0.4
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp16": torch.float16, "bf16": torch.bfloat16,
                                             "off": None}
DEFAULT_POINTS_PER_CLASS = 10
DEFAULT_CRF_WEIGHT = 0.02
"""Gated CRF weight of point training unless --plain: on dubai-aerial (2-core CPU, MobileNetV3,
8 x 50 steps, seeds 0-2) it took the final-epoch mIoU from 26.87% [24.49, 28.39] to
33.61% [32.40, 35.27]; on an H100, 0.01 gave less and 0.05 / 0.1 the same (docs/results.md)."""
RUN_FILES = ("last.pt", "best.pt")
"""A folder holding one of these holds a run: training into it needs --resume or --overwrite."""
OUTPUT_FILES = (*RUN_FILES, "metrics.json", "metrics.csv")

TrainingSet = Union[PointSupervisedDataset, "RasterPointDataset"]
"""Crops of a dataset with masks (simulated / file points, or dense), or of rasters + a point layer."""
Criterion = Union[PartialFocalCELoss, WeakSupervisionLoss]
"""The training loss: pfCE on labelled pixels, or with the terms on unlabelled ones."""


class OptionError(ValueError):
    """Options that disagree with the data (e.g. ``--alpha`` for another number of classes)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("geoseg train", __doc__)
    add_data_args(p, required=False)
    add_point_args(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, pictures)")
    sup = p.add_argument_group("supervision", "one of --points-per-class, --point-file, --dense")
    labels = sup.add_mutually_exclusive_group()
    labels.add_argument("--points-per-class", type=at_least(1), default=None,
                        help="points simulated per class present in each training image "
                             f"(default: {DEFAULT_POINTS_PER_CLASS} unless --point-file or --dense)")
    labels.add_argument("--point-file", type=existing_path, default=None,
                        help="real point annotations (CSV image,x,y,class / GeoJSON / PNG folder)")
    labels.add_argument("--dense", action="store_true",
                        help="train on the dense masks instead (full supervision baseline)")
    sup.add_argument("--gamma", type=at_least(0.0, float), default=2.0,
                     help="focal exponent (0: partial CE)")
    sup.add_argument("--alpha", type=at_least(0.0, float), nargs="*", default=None,
                     help="per-class weights, one per class of the table")
    weak = p.add_argument_group("weak supervision", "use the unlabelled pixels too (point labels "
                                "only; the Gated CRF term is on by default, as measured best in "
                                "docs/results.md)")
    weak.add_argument("--expand", choices=("none", "superpixels", "forest"), default="none",
                      help="label expansion: superpixels (each SLIC superpixel holding clicked "
                           "points of one class takes that class) or forest (a random forest on "
                           "pixel filter features, fitted on the clicks, labels the pixels it is "
                           "sure of; --data only)")
    weak.add_argument("--forest-threshold", type=at_least(0.0, float), default=FOREST_THRESHOLD,
                      help="--expand forest: least class probability of a forest label")
    weak.add_argument("--expand-weight", type=at_least(0.0, float), default=EXPAND_WEIGHT,
                      help="loss weight of expanded pixels (clicked points weigh 1)")
    weak.add_argument("--segment-area", type=positive(float), default=ExpansionConfig.segment_area_px,
                      help="mean superpixel area in pixels of the training images (at --scale)")
    weak.add_argument("--superpixel-cache", type=Path, default=None,
                      help="folder for cached superpixels (default: <out>/superpixels; share one "
                           "between runs over the same images)")
    weak.add_argument("--crf-weight", type=at_least(0.0, float), default=None,
                      help="weight of the Gated CRF loss on all valid pixels (default for point "
                           f"labels: {DEFAULT_CRF_WEIGHT}, measured in docs/results.md; 0: off; "
                           "off with --plain and --dense)")
    weak.add_argument("--crf-warmup", type=at_least(0), default=1,
                      help="epochs of plain training before the Gated CRF loss is switched on")
    weak.add_argument("--pseudo-labels", action="store_true",
                      help="self-training: from --pseudo-start on, also train on the confident "
                           "predictions of a moving average of the network (training/labels/self_training.py)")
    weak.add_argument("--pseudo-threshold", type=at_least(0.0, float), default=PSEUDO_THRESHOLD,
                      help="softmax confidence the teacher needs to label a pixel")
    weak.add_argument("--pseudo-weight", type=at_least(0.0, float), default=PSEUDO_WEIGHT,
                      help="loss weight of the pseudo labels (ramped up over the first half "
                           "of their epochs)")
    weak.add_argument("--pseudo-start", type=at_least(0.0, float), default=PSEUDO_START,
                      help="share of the epochs trained before pseudo labels are used")
    weak.add_argument("--teacher-decay", type=at_least(0.0, float), default=TEACHER_DECAY,
                      help="the teacher moves 1 - this of the way to the network every step")
    weak.add_argument("--plain", action="store_true",
                      help="partial focal CE on the clicked points only (no Gated CRF term; "
                           "refuses --expand / --crf-weight): the baseline of the comparison")
    net = p.add_argument_group("model")
    net.add_argument("--arch", choices=tuple(ARCHITECTURES), default="deeplabv3_resnet50",
                     help="network (ResNet-50 is the reference, MobileNetV3 the fast one)")
    net.add_argument("--pretrained", default="none",
                     help="backbone weights: none, imagenet (needs network or cache), or a .pth")
    net.add_argument("--aux-loss", action="store_true", help="train the auxiliary head too")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=at_least(1), default=10, help="epochs in all")
    opt.add_argument("--steps-per-epoch", type=at_least(0), default=0,
                     help="optimizer steps per epoch (0: one pass over the training images)")
    opt.add_argument("--batch-size", type=at_least(2), default=8,
                     help="images per step and process (at least 2: the ASPP pooling's BatchNorm "
                          "needs two); the global batch is this times the processes")
    opt.add_argument("--crop-size", type=at_least(1), default=256, help="training crop side, pixels")
    opt.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                     help="optimiser (sgd: momentum 0.9)")
    opt.add_argument("--lr", type=positive(float), default=1e-3,
                     help="initial learning rate (poly decay, power 0.9, to 0)")
    opt.add_argument("--weight-decay", type=at_least(0.0, float), default=1e-4, help="weight decay")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0,
                     help="seed of the initial weights, simulated points, crops and order")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--amp", choices=tuple(AMP_DTYPES), default="fp16",
                     help="mixed precision of the training steps on CUDA (off: fp32 with "
                          "TF32 convolutions); the CPU always trains in fp32")
    run.add_argument("--num-workers", type=at_least(0), default=0, help="data loader processes")
    run.add_argument("--threads", type=at_least(0), default=0,
                     help="CPU threads (0: torch default)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (its checkpoints and metrics)")
    run.add_argument("--stop-after", type=at_least(0), default=0,
                     help="stop after this many epochs of this invocation (time-limited jobs); "
                          "continue later with --resume (0: no limit)")
    run.add_argument("--max-pictures", type=at_least(0), default=8,
                     help="validation pictures to write (several processes: from rank 0's block "
                          "of the validation images)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    par = p.add_argument_group("distributed", "data-parallel training (DDP) over several processes")
    par.add_argument("--nproc", type=at_least(1), default=None,
                     help="start this many training processes on this machine through torchrun "
                          "(one GPU each on CUDA, gloo on the CPU); the same as torchrun "
                          "--nproc-per-node N -m training.train ... (default: one plain process)")
    par.add_argument("--sync-bn", action="store_true",
                     help="BatchNorm statistics over the global batch (SyncBatchNorm; CUDA, "
                          "several processes only)")
    args = p.parse_args(argv)
    problem = pretrained_problem(args) or point_arg_problem(args)
    if problem:
        p.error(problem)
    if args.images is None and args.data is None:
        p.error("give --images and --points (rasters and the points clicked on them), or --data")
    if args.images is None and args.points_per_class is None and not args.dense \
            and args.point_file is None:
        args.points_per_class = DEFAULT_POINTS_PER_CLASS
    if args.crf_weight is None:
        args.crf_weight = 0.0 if args.plain or args.dense else DEFAULT_CRF_WEIGHT
    if weakly_supervised(args) and (args.plain or args.dense):
        p.error(f"--expand / --crf-weight / --pseudo-labels cannot go with "
                f"{'--plain' if args.plain else '--dense'}")
    if args.expand == "forest" and args.images is not None:
        p.error("--expand forest needs --data (rasters with a point layer: use --expand "
                "superpixels or none)")
    if not 0.0 <= args.pseudo_threshold <= 1.0 or args.pseudo_start > 1.0 or args.teacher_decay >= 1.0:
        p.error("--pseudo-threshold and --pseudo-start are shares in [0, 1]; --teacher-decay < 1")
    return args


PRETRAINED_NAMES = ("none", "imagenet")


def pretrained_problem(args: argparse.Namespace) -> str | None:
    """Why ``--pretrained`` names no weights (one line), or None; ``none`` / ``imagenet`` are
    taken in any case. Checked before any data is read."""
    if args.pretrained.lower() in PRETRAINED_NAMES:
        args.pretrained = args.pretrained.lower()
        return None
    if Path(args.pretrained).is_file():
        return None
    return (f"--pretrained {args.pretrained}: expected none, imagenet or a weights file "
            f"(.pth), and {args.pretrained} does not exist")


def single_class_warning(record: dict[str, Any], table: ClassTable) -> str | None:
    """A warning when the validation predictions of ``record`` (its ``val_confusion``, rows true,
    columns predicted) all fall in one class, else None."""
    confusion = np.asarray(record.get("val_confusion") or [], dtype=np.int64)
    if confusion.ndim != 2 or not confusion.sum():
        return None
    predicted = np.flatnonzero(confusion.sum(axis=0))
    if len(predicted) != 1:
        return None
    return (f"the model predicts one class ({table.names[int(predicted[0])]}) for every "
            f"validation {'point' if 'val_points' in record else 'pixel'}: it has not learned "
            f"the others yet; train longer (--epochs, --steps-per-epoch), check the points of "
            f"each class, or try another --lr")


def weakly_supervised(args: argparse.Namespace) -> bool:
    """Whether the run uses the unlabelled pixels (label expansion, the Gated CRF loss or
    pseudo labels): its crops then mark their padding, which none of these may label."""
    return args.expand != "none" or args.crf_weight > 0 or args.pseudo_labels


def out_folder_problem(args: argparse.Namespace) -> str | None:
    """Why training must not write into ``--out`` (one line), or None. Creates the folder."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not args.overwrite:
        if not args.resume:
            return (f"{out} already holds a run ({', '.join(held)}); pass --resume to continue "
                    f"it or --overwrite to replace it")
        if not (out / "last.pt").exists():
            return f"{out} holds {', '.join(held)} but no last.pt to resume; pass --overwrite to replace it"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out}: cannot create the folder ({exc.strerror})"
    return None


def poly_schedule(total_steps: int, power: float = 0.9):
    """LR factor (1 - step / total) ** power, floored at 0."""
    return lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power


def build_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), args.lr, momentum=0.9,
                               weight_decay=args.weight_decay)
    return torch.optim.AdamW(model.parameters(), args.lr, weight_decay=args.weight_decay)


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, criterion: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, device: torch.device, bar_title: str,
                    progress: bool, self_training: SelfTraining | None = None,
                    amp: torch.dtype | None = torch.float16) -> list[float]:
    """One pass over ``loader``: autocast to ``amp`` (None: off) and channels_last on CUDA, the
    aux head weighted by AUX_WEIGHT when present; ``self_training``: its pseudo-label term is
    added (when its weight is not 0) and its teacher updated after every step. Returns the loss
    of each step."""
    cuda = device.type == "cuda"
    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=bar_title, unit="step", disable=not progress, leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        extra = (images,) if isinstance(criterion, WeakSupervisionLoss) else ()
        with torch.autocast(device.type, amp or torch.float32, enabled=cuda and amp is not None):
            outputs = model(images)
            loss = criterion(outputs["out"], labels, *extra)
            if "aux" in outputs:
                loss = loss + AUX_WEIGHT * criterion(outputs["aux"], labels, *extra)
            if self_training is not None and self_training.weight > 0:
                loss = loss + self_training.loss(images, labels, outputs["out"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if self_training is not None:
            self_training.after_step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def write_metrics(out: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """``metrics.json`` (config + one record per epoch) and a flat ``metrics.csv``."""
    (out / "metrics.json").write_text(json.dumps({"config": config, "epochs": history},
                                                 indent=2) + "\n")
    rows = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            | {f"iou_{n}": v for n, v in r["val_iou"].items()}
            | {f"dense_iou_{n}": v for n, v in r.get("val_dense_iou", {}).items()} for r in history]
    if rows:
        with (out / "metrics.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


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


def read_annotations(args: argparse.Namespace, sources: list[SampleSource], table: ClassTable
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


def training_dataset(args: argparse.Namespace, source: SampleSource, table: ClassTable,
                     annotations: dict[str, Points] | None = None) -> PointSupervisedDataset:
    """Crops of ``source`` with their labels: points (simulated, or ``annotations`` read from
    a point file) or the dense masks."""
    points_per_class = None if args.dense else args.points_per_class
    if not weakly_supervised(args):
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
                                  args.forest_threshold, progress=bar)
        dataset.use_expander(expander)
        stats = expander.stats()
        print(f"forest labels: {100 * stats.labelled_share:.1f}% of the pixels of "
              f"{stats.images} images from {stats.clicks} clicks "
              f"({sum(stats.seconds.values()):.0f} s)", flush=True)
    return dataset


def training_criterion(args: argparse.Namespace, device: torch.device) -> Criterion:
    """pfCE on the clicked points, or, for a weakly supervised run, :class:`WeakSupervisionLoss`
    (its Gated CRF weight is set per epoch by :func:`crf_weight_for`)."""
    if not weakly_supervised(args):
        return PartialFocalCELoss(args.gamma, args.alpha).to(device)
    return WeakSupervisionLoss(args.gamma, args.alpha, expand_weight=args.expand_weight,
                               crf_weight=args.crf_weight).to(device)


def crf_weight_for(args: argparse.Namespace, epoch: int) -> float:
    """The Gated CRF weight in ``epoch`` (0-based): 0 during the --crf-warmup epochs."""
    return args.crf_weight if epoch >= args.crf_warmup else 0.0


@dataclass
class RunState:
    """What a checkpoint keeps and ``--resume`` restores: the network, its optimiser state and
    the epochs done (``start_epoch`` is the next one to train). ``trainer``: the network that
    training steps go through when it is not ``model`` itself (its DDP wrapper)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    start_epoch: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    trainer: torch.nn.Module | None = None
    teacher: Teacher | None = None

    def training_network(self) -> torch.nn.Module:
        """What the optimizer steps train through: the DDP wrapper, or ``model``."""
        return self.model if self.trainer is None else self.trainer

    def add(self, record: dict[str, Any]) -> bool:
        """Append an epoch's record to the history; returns whether its mIoU is a new best."""
        self.history.append(record)
        improved = record["val_miou"] > self.best_miou
        self.best_miou = max(self.best_miou, record["val_miou"])
        return improved

    def best_record(self) -> dict[str, Any]:
        """The epoch record with the best validation mIoU so far ({} before the first epoch)."""
        return max(self.history, key=lambda r: r["val_miou"], default={})


def new_run_state(args: argparse.Namespace, table: ClassTable, device: torch.device,
                  total_steps: int, group: Group = SINGLE) -> RunState:
    """A freshly initialised network (seeded by ``--seed``: the same in every process),
    optimiser, LR schedule, scaler. ``--sync-bn`` in a distributed run: SyncBatchNorm layers
    (same parameters and state dict keys as BatchNorm)."""
    torch.manual_seed(args.seed)
    model = build_model(args.arch, table.num_classes, args.pretrained, args.aux_loss).to(device)
    if group.active and args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(args, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and args.amp == "fp16")
    teacher = Teacher(model, args.teacher_decay) if args.pseudo_labels else None
    return RunState(model, optimizer, scheduler, scaler, teacher=teacher)


def resume(state: RunState, path: Path, args: argparse.Namespace, table: ClassTable) -> None:
    """Load the checkpoint ``path`` into ``state``, the torch RNG included, so that the run goes
    on exactly as if it had not stopped. Raises CheckpointError when the options disagree."""
    ckpt = read_checkpoint(path)
    config = ckpt.get("config", {})
    saved = {"--arch": ckpt.get("arch"), "--aux-loss": ckpt.get("aux_loss"),
             "--optimizer": config.get("optimizer", args.optimizer)}
    asked = {"--arch": args.arch, "--aux-loss": args.aux_loss, "--optimizer": args.optimizer}
    for flag, value in saved.items():
        if value != asked[flag]:
            raise CheckpointError(f"{path} was trained with {flag} {value}, not {asked[flag]}; "
                                  f"resume with the run's options or pass --overwrite")
    if ClassTable.from_dict(ckpt["classes"]) != table:
        raise CheckpointError(f"{path} was trained with another class table; resume with "
                              f"the run's --classes or pass --overwrite")
    try:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        state.scaler.load_state_dict(ckpt["scaler"])
        if state.teacher is not None:
            state.teacher.load_state_dict(ckpt["teacher"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        state.start_epoch, state.best_miou = ckpt["epoch"] + 1, ckpt["best_miou"]
        state.history = ckpt["history"]
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot resume from it ({str(exc).splitlines()[0]})") from exc


def resume_if_possible(state: RunState, path: Path, args: argparse.Namespace, table: ClassTable
                       ) -> bool:
    """``--resume``: continue from ``path`` when it exists, saying after which epoch. Returns
    False when that run already finished all ``--epochs`` (it says so): nothing left to train."""
    if not path.is_file():
        print(f"no {path} to resume: starting a new run")
        return True
    resume(state, path, args, table)
    if state.start_epoch >= args.epochs:
        print(f"{path}: the run already finished all {state.start_epoch} epochs; nothing to train "
              f"(raise --epochs to train longer)")
        return False
    print(f"resumed from {path} after epoch {state.start_epoch}/{args.epochs}")
    return True


def dense_validation(args: argparse.Namespace, val_source: SampleSource, table: ClassTable,
                     group: Group = SINGLE, annotations: dict[str, Points] | None = None
                     ) -> Validation:
    """Validation on the dense masks of ``val_source``: in a distributed ``group`` each process
    scores its block of the images and the confusion matrices are summed. Pictures show the
    point file's points (``annotations``) where it has them, else simulated ones."""
    def run(model: torch.nn.Module, device: torch.device, progress: bool,
            pictures: Path | None, max_pictures: int) -> dict[str, Any]:
        cm = evaluate_source(predictor(model, device, amp=device.type == "cuda"),
                             group.share_source(val_source), table, pictures, max_pictures,
                             args.points_per_class or DEFAULT_POINTS_PER_CLASS, args.seed, progress,
                             annotations)
        cm = group.sum(cm)
        result = scores(cm)
        return {"val_miou": result.miou, "val_pixel_accuracy": result.pixel_accuracy,
                "val_iou": result.as_dict(table.names)["iou"], "val_confusion": cm.tolist()}
    return run


def run_epoch(epoch: int, args: argparse.Namespace, state: RunState, dataset: TrainingSet,
              criterion: Criterion, steps: int, validate: Validation,
              device: torch.device, out: Path, group: Group = SINGLE) -> dict[str, Any]:
    """Train one epoch of ``steps`` optimizer steps, then validate (and write the validation
    pictures). Returns the epoch's record for the metrics.

    In a distributed ``group`` each process trains on its share of the epoch's draws; the
    record (loss averaged over the processes, validation as ``validate`` combines it) is the
    same on every process; rank 0 alone draws pictures."""
    t0 = time.time()
    cuda = device.type == "cuda"
    progress = not args.no_progress and group.is_main
    dataset.set_epoch(epoch)
    group.seed_epoch(args.seed, epoch)
    if isinstance(criterion, WeakSupervisionLoss):
        criterion.crf_weight = crf_weight_for(args, epoch)
    draws = epoch_draws(len(dataset), steps * args.batch_size * group.world_size, args.seed, epoch)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=group.share(draws),
                        num_workers=args.num_workers, pin_memory=cuda)
    self_training = None if state.teacher is None else SelfTraining(
        state.teacher, args.pseudo_threshold,
        pseudo_weight_for(args.pseudo_weight, args.pseudo_start, args.epochs, epoch), args.gamma,
        criterion.alpha)  # the class weights of the main loss, on the device already
    losses = train_one_epoch(state.training_network(), loader, criterion, state.optimizer,
                             state.scheduler, state.scaler, device, f"epoch {epoch + 1}/{args.epochs}",
                             progress, self_training, AMP_DTYPES[args.amp])
    train_seconds = time.time() - t0
    state.model.eval()
    group.sync_state(state.model)  # every process scores exactly the weights rank 0 saves
    found = validate(state.model, device, progress, out / "pictures" if group.is_main else None,
                     args.max_pictures if group.is_main else 0)
    record: dict[str, Any] = {}
    if isinstance(dataset, ExpandedPointDataset):
        stats = dataset.cache.stats
        record["superpixels"] = {"computed": stats.computed, "cache_hits": stats.hits,
                                 "seconds_per_image": round(stats.seconds_per_image(), 3)}
    if self_training is not None:
        shares = self_training.labelled_share
        record["pseudo_labels"] = {"weight": self_training.weight, "labelled_share": round(
            group.mean(float(torch.stack(shares).mean()) if shares else 0.0), 4)}
    return record | {"epoch": epoch, "step": (epoch + 1) * steps,
            "train_loss": group.mean(float(np.mean(losses)) if losses else 0.0)} | found | {
            "lr": state.scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2),
            "train_seconds": round(train_seconds, 2)}


def checkpoint_payload(args: argparse.Namespace, table: ClassTable, config: dict[str, Any],
                       state: RunState, epoch: int) -> dict[str, Any]:
    """Everything ``last.pt`` / ``best.pt`` hold after ``epoch``: the network (for export),
    the optimiser, schedule, scaler and torch RNG (for --resume), the history and options."""
    return {"arch": args.arch, "aux_loss": args.aux_loss, "classes": table.to_dict(),
            "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict(),
            "epoch": epoch, "best_miou": state.best_miou, "history": state.history,
            "crop_size": args.crop_size, "config": config,
            BAND_SCALING: config.get(BAND_SCALING),
            "rng": {"torch": torch.get_rng_state()},
            "teacher": state.teacher.state_dict() if state.teacher is not None else None}


def run_config(args: argparse.Namespace, device: torch.device, data: dict[str, Any], steps: int,
               table: ClassTable, group: Group = SINGLE) -> dict[str, Any]:
    """The options and what they resolved to, as plain JSON values (for metrics.json);
    ``data``: what the data options resolved to (image counts, point counts...)."""
    options = {k: str(v) if isinstance(v, Path) else
               [str(x) for x in v] if isinstance(v, list) else v for k, v in vars(args).items()}
    options["amp"] = args.amp if device.type == "cuda" else "off"  # the CPU trains in fp32
    if args.images is not None:  # rasters + a point layer: no dataset layout
        options["dataset"] = None
    return options | data | {"device": str(device), "steps_per_epoch": steps,
                      "classes": list(table.names), "processes": group.world_size,
                      "backend": group.backend,
                      "global_batch_size": args.batch_size * group.world_size}


def save_checkpoints(out: Path, payload: dict[str, Any], improved: bool) -> None:
    """``last.pt`` every epoch; ``best.pt`` too when the validation mIoU ``improved``."""
    save_checkpoint(out / "last.pt", payload)
    if improved:
        save_checkpoint(out / "best.pt", payload)


def log_epoch(record: dict[str, Any], epochs: int) -> None:
    if "val_points" in record:
        val = (f"val points: mIoU {100 * record['val_miou']:.2f}%  "
               f"acc {100 * record['val_pixel_accuracy']:.2f}% ({record['val_points']} points)")
        if "val_dense_miou" in record:
            val += f"  dense mIoU {100 * record['val_dense_miou']:.2f}%"
    else:
        val = (f"val mIoU {100 * record['val_miou']:.2f}%  "
               f"acc {100 * record['val_pixel_accuracy']:.2f}%")
    print(f"epoch {record['epoch'] + 1}/{epochs}  loss {record['train_loss']:.4f}  {val}  "
          f"({record['seconds']:.0f} s)", flush=True)


def remove_if_empty(out: Path) -> None:
    """Remove the run folder ``out`` that this run created, when a failed start left it empty."""
    try:
        out.rmdir()
    except OSError:
        pass  # not empty (or gone): leave it


def remove_previous_run(out: Path) -> None:
    """``--overwrite``: delete the files an earlier run left in ``out`` (checkpoints, metrics)."""
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)


def check_distributed(args: argparse.Namespace, device: torch.device, processes: int) -> None:
    """Options that a run of ``processes`` processes on ``device`` cannot honour."""
    if args.sync_bn and processes > 1 and device.type != "cuda":
        raise OptionError(f"--sync-bn needs CUDA devices (SyncBatchNorm does not run on "
                          f"{device.type}); leave it out when training on {device.type}")


def log_start(args: argparse.Namespace, group: Group, steps: int) -> None:
    """A distributed run says what it is: processes, backend, per-process and global batch."""
    if group.active:
        print(f"distributed: {group.world_size} processes ({group.backend}, "
              f"{'one GPU each' if group.device.type == 'cuda' else 'CPU'}), "
              f"batch {args.batch_size} per process, global batch "
              f"{args.batch_size * group.world_size}, {steps} steps per epoch"
              f"{', SyncBatchNorm' if args.sync_bn else ''}", flush=True)


def training_data(args: argparse.Namespace, group: Group = SINGLE
                  ) -> tuple[TrainingSet, Validation, ClassTable, dict[str, Any]]:
    """The training dataset, the validation, the class table and what the data options resolved
    to: rasters + a point layer (``--images``), or a dataset with dense masks (``--data``)."""
    if args.images is not None:
        from training.points.run import prepare_points  # GDAL, PROJ and GEOS: only for --points

        given = ClassTable.load(args.classes) if args.classes else None
        points = prepare_points(args, given)
        check_alpha(args.alpha, points.table)
        pad = PADDING if weakly_supervised(args) else IGNORE_INDEX
        dataset = points.dataset(args, pad)
        data = points.config() | {"train_images": len(dataset),
                                  "val_images": len(points.validation_rasters()),
                                  "points_per_class": None}
        return dataset, points.validation(group.device.type == "cuda"), points.table, data
    table: ClassTable = load_table(args)
    check_alpha(args.alpha, table)
    train_source = open_source(args, "train", table)
    val_source = open_source(args, "val", table)
    annotations = read_annotations(args, [train_source, val_source], table)
    facts: dict[str, Any] = {"train_images": len(train_source), "val_images": len(val_source)}
    crops = training_dataset(args, train_source, table, annotations)
    expander = getattr(crops, "expander", None)
    if isinstance(expander, ForestExpander):
        facts["forest_labels"] = asdict(expander.stats())
    return crops, dense_validation(args, val_source, table, group, annotations), table, facts


def train(args: argparse.Namespace, group: Group | None = None) -> dict[str, Any]:
    """Run the training described by ``args`` as one process of ``group`` (None: a single
    process on ``--device``); returns the best epoch's record."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    group = group or Group(device=resolve_device(args.device))
    device = group.device
    check_distributed(args, device, group.world_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset, validate, table, data = training_data(args, group)
    steps = args.steps_per_epoch or math.ceil(len(dataset) / (args.batch_size * group.world_size))
    state = new_run_state(args, table, device, steps * args.epochs, group)
    criterion = training_criterion(args, device)
    config = run_config(args, device, data, steps, table, group)
    log_start(args, group, steps)
    if args.resume:
        more = resume_if_possible(state, out / "last.pt", args, table)
        group.agree(state.start_epoch, "the epochs already done (every process must read the "
                                       "same --out: put it on storage that every machine sees)")
        if not more:
            return state.best_record()  # the run had finished all its epochs: nothing to train
    state.trainer = group.wrap(state.model) if group.active else None

    best_record = state.best_record()
    stop = args.epochs if not args.stop_after else min(args.epochs, state.start_epoch + args.stop_after)
    for epoch in range(state.start_epoch, stop):
        record = run_epoch(epoch, args, state, dataset, criterion, steps, validate, device, out,
                           group)
        improved = state.add(record)
        if improved:
            best_record = record
        if group.is_main:
            if args.overwrite and epoch == state.start_epoch:
                remove_previous_run(out)  # only now: a run that fails in its first epoch keeps the old one
            save_checkpoints(out, checkpoint_payload(args, table, config, state, epoch), improved)
            write_metrics(out, config, state.history)
            log_epoch(record, args.epochs)
    if group.is_main and state.history:
        problem = single_class_warning(state.history[-1], table)
        if problem:
            warn(problem)
    return best_record


def launch_problem(args: argparse.Namespace) -> str | None:
    """Why ``--nproc`` processes cannot start as asked (one line), or None: checked once before
    torchrun starts them, so the usual mistakes give one line rather than one per process."""
    problem = out_folder_problem(args)
    if problem:
        return problem
    try:
        device = resolve_device(args.device, 0, args.nproc)
        check_distributed(args, device, args.nproc)
    except (DeviceError, OptionError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    args = parse_args(argv)
    if args.nproc is not None and not under_torchrun():
        problem = launch_problem(args)
        if problem:
            return fail(problem)
        return launch(args.nproc, sys.argv[1:] if argv is None else list(argv))
    if args.nproc is not None and str(args.nproc) != os.environ.get("LOCAL_WORLD_SIZE"):
        return fail(f"--nproc {args.nproc} under torchrun, which started "
                    f"{os.environ.get('LOCAL_WORLD_SIZE')} processes on this machine: leave "
                    f"--nproc out when starting through torchrun")
    try:
        group = join(args.device)
    except (DeviceError, DistributedError) as exc:
        return fail(str(exc))
    try:
        with group.quiet_unless_main():
            created = not Path(args.out).exists()
            problem = out_folder_problem(args)
            if problem:
                return fail(group.tag(problem))
            try:
                best = train(args, group)
            except (DatasetError, PointFileError, PretrainedWeightsError, CheckpointError,
                    ClassTableError, DeviceError, OptionError, DistributedError,
                    PointInputError) as exc:
                if created and group.is_main:
                    remove_if_empty(Path(args.out))
                return fail(group.tag(str(exc)))
            if best:
                print(f"best val mIoU {100 * best['val_miou']:.2f}% at epoch {best['epoch'] + 1}; "
                      f"checkpoints in {args.out}")
    finally:
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
