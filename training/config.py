"""The options of ``geoseg train``: one typed :class:`TrainConfig`, built from the command line
in one place (:func:`parse_config`), then passed to the run.

Defaults that depend on other options (10 simulated points per class unless a point file or
dense masks are given; the Gated CRF weight 0.02 unless ``--plain`` / ``--dense``) and the
cross-checks between options are resolved here too, so the run never sees an unresolved option.
The field names are the options' (``--crop-size`` -> ``crop_size``); ``metrics.json`` records
them in this order under ``config``.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from common.cli import at_least, existing_path, parser, positive
from model.builder import ARCHITECTURES
from training.data.options import add_data_args
from training.labels.expansion import ExpansionConfig
from training.labels.forest import FOREST_THRESHOLD
from training.labels.self_training import PSEUDO_START, PSEUDO_THRESHOLD, PSEUDO_WEIGHT, TEACHER_DECAY
from training.losses.weak import EXPAND_WEIGHT
from training.points.options import add_point_args, point_arg_problem

AMP_DTYPES: dict[str, torch.dtype | None] = {"fp16": torch.float16, "bf16": torch.bfloat16,
                                             "off": None}
DEFAULT_POINTS_PER_CLASS = 10
DEFAULT_CRF_WEIGHT = 0.02
"""Gated CRF weight of point training unless --plain: on dubai-aerial (2-core CPU, MobileNetV3,
8 x 50 steps, seeds 0-2) it took the final-epoch mIoU from 26.87% [24.49, 28.39] to
33.61% [32.40, 35.27]; on an H100, 0.01 gave less and 0.05 / 0.1 the same (docs/results.md)."""
DEFAULT_EXPAND = "forest"
"""Label expansion of point training unless --plain: on dubai-aerial (2-core CPU, MobileNetV3,
8 x 50 steps, seeds 0-2) forest labels took the final-epoch mIoU on tiles 5-6 from 33.61% (the
Gated CRF alone) to the figures of docs/results.md#against-the-forest-peer-forest-labels."""
FOREST_WEIGHT = 1.0
"""Loss weight of a forest-labelled pixel against a click (the weight measured)."""
PRETRAINED_NAMES = ("none", "imagenet")


class OptionError(ValueError):
    """Options that cannot work together or with the data (one line)."""


@dataclass
class TrainConfig:
    """Every option of a training run, resolved (see the module doc). Paths as given."""

    # data (--data) or rasters + a point layer (--images / --points)
    data: Optional[str]
    dataset: str
    classes: Optional[Path]
    train_dirs: Optional[list[str]]
    val_dirs: Optional[list[str]]
    scale: float
    images: Optional[list[str]]
    points: Optional[Path]
    class_field: Optional[str]
    csv_crs: Optional[str]
    val_fraction: float
    val_block: Optional[int]
    val_images: Optional[list[str]]
    val_masks: Optional[list[Path]]
    random_crops: float
    out: str
    # supervision
    points_per_class: Optional[int]
    point_file: Optional[Path]
    dense: bool
    gamma: float
    alpha: Optional[list[float]]
    # weak supervision
    expand: str
    expand_weight: float
    forest_threshold: float
    forest_refresh: int
    forest_segments: float
    segment_area: float
    superpixel_cache: Optional[Path]
    crf_weight: float
    crf_warmup: int
    pseudo_labels: bool
    pseudo_threshold: float
    pseudo_weight: float
    pseudo_start: float
    teacher_decay: float
    plain: bool
    # model
    arch: str
    pretrained: str
    aux_loss: bool
    # optimisation
    epochs: int
    steps_per_epoch: int
    batch_size: int
    crop_size: int
    color_jitter: float
    optimizer: str
    lr: float
    weight_decay: float
    # run
    seed: int
    device: str
    amp: str
    num_workers: int
    threads: int
    resume: bool
    overwrite: bool
    stop_after: int
    max_pictures: int
    no_progress: bool
    nproc: Optional[int]
    sync_bn: bool

    @property
    def weakly_supervised(self) -> bool:
        """Whether the run uses the unlabelled pixels (label expansion, the Gated CRF loss or
        pseudo labels): its crops then mark their padding, which none of these may label."""
        return self.expand != "none" or self.crf_weight > 0 or self.pseudo_labels

    def crf_weight_for(self, epoch: int) -> float:
        """The Gated CRF weight in ``epoch`` (0-based): 0 during the --crf-warmup epochs."""
        return self.crf_weight if epoch >= self.crf_warmup else 0.0

    def as_json(self) -> dict[str, Any]:
        """The options as plain JSON values, in field order (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else
                [str(x) for x in v] if isinstance(v, list) else v
                for k, v in asdict(self).items()}


def _supervision_args(p: argparse.ArgumentParser) -> None:
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


def _expansion_args(weak: argparse._ArgumentGroup) -> None:
    weak.add_argument("--expand", choices=("none", "superpixels", "forest"), default=None,
                      help="label expansion: forest (a random forest on pixel filter features, "
                           "fitted on the clicks, labels the pixels it is sure of), superpixels "
                           "(each SLIC superpixel holding clicked points of one class takes that "
                           "class) or none (default: forest for point labels, none with --plain "
                           "or --dense)")
    weak.add_argument("--expand-weight", type=at_least(0.0, float), default=None,
                      help=f"loss weight of expanded pixels, clicked points weighing 1 (default: "
                           f"{FOREST_WEIGHT} for forest labels, {EXPAND_WEIGHT} for superpixels)")
    weak.add_argument("--forest-threshold", type=at_least(0.0, float), default=FOREST_THRESHOLD,
                      help="--expand forest: least class probability of a forest label")
    weak.add_argument("--forest-refresh", type=at_least(0), default=0,
                      help="--expand forest: from this epoch on (1-based; 0: never), relabel the "
                           "training images before each epoch from the mean of the forest's and "
                           "the network's probabilities (co-training)")
    weak.add_argument("--forest-segments", type=at_least(0.0, float), default=0.0,
                      help="--expand forest: average the forest's probabilities within regions of "
                           "this Felzenszwalb scale before labelling (0: per pixel)")
    weak.add_argument("--segment-area", type=positive(float), default=ExpansionConfig.segment_area_px,
                      help="mean superpixel area in pixels of the training images (at --scale)")
    weak.add_argument("--superpixel-cache", type=Path, default=None,
                      help="folder for cached superpixels (default: <out>/superpixels; share one "
                           "between runs over the same images)")


def _weak_args(p: argparse.ArgumentParser) -> None:
    weak = p.add_argument_group("weak supervision", "use the unlabelled pixels too (point labels "
                                "only; the Gated CRF term is on by default, as measured best in "
                                "docs/results.md)")
    _expansion_args(weak)
    weak.add_argument("--crf-weight", type=at_least(0.0, float), default=None,
                      help="weight of the Gated CRF loss on all valid pixels (default: "
                           f"{DEFAULT_CRF_WEIGHT} for point labels, measured in docs/results.md; "
                           "0: off; off with --plain and --dense)")
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


def _model_and_optimiser_args(p: argparse.ArgumentParser) -> None:
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
    opt.add_argument("--color-jitter", type=at_least(0.0, float), default=0.0,
                     help="photometric augmentation of the network's input: brightness, contrast "
                          "and saturation factors drawn from 1 +- this (0: off)")
    opt.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                     help="optimiser (sgd: momentum 0.9)")
    opt.add_argument("--lr", type=positive(float), default=1e-3,
                     help="initial learning rate (poly decay, power 0.9, to 0)")
    opt.add_argument("--weight-decay", type=at_least(0.0, float), default=1e-4, help="weight decay")


def _run_args(p: argparse.ArgumentParser) -> None:
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


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The ``geoseg train`` parser (its fields are :class:`TrainConfig`'s)."""
    p = parser("geoseg train", description)
    add_data_args(p, required=False)
    add_point_args(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, pictures)")
    _supervision_args(p)
    _weak_args(p)
    _model_and_optimiser_args(p)
    _run_args(p)
    return p


def pretrained_problem(pretrained: str) -> str | None:
    """Why ``--pretrained`` names no weights (one line), or None; ``none`` / ``imagenet`` are
    taken in any case. Checked before any data is read."""
    if pretrained.lower() in PRETRAINED_NAMES or Path(pretrained).is_file():
        return None
    return (f"--pretrained {pretrained}: expected none, imagenet or a weights file "
            f"(.pth), and {pretrained} does not exist")


def resolve(args: argparse.Namespace) -> TrainConfig:
    """The defaults that depend on other options filled in; raises OptionError (one line) when
    options cannot go together."""
    problem = pretrained_problem(args.pretrained) or point_arg_problem(args)
    if problem:
        raise OptionError(problem)
    if args.pretrained.lower() in PRETRAINED_NAMES:
        args.pretrained = args.pretrained.lower()
    if args.images is None and args.data is None:
        raise OptionError("give --images and --points (rasters and the points clicked on them), "
                          "or --data")
    if args.images is None and args.points_per_class is None and not args.dense \
            and args.point_file is None:
        args.points_per_class = DEFAULT_POINTS_PER_CLASS
    if args.crf_weight is None:
        args.crf_weight = 0.0 if args.plain or args.dense else DEFAULT_CRF_WEIGHT
    if args.expand is None:
        args.expand = "none" if args.plain or args.dense else DEFAULT_EXPAND
    if args.expand_weight is None:
        args.expand_weight = FOREST_WEIGHT if args.expand == "forest" else EXPAND_WEIGHT
    config = TrainConfig(**vars(args))
    if config.weakly_supervised and (config.plain or config.dense):
        raise OptionError(f"--expand / --crf-weight / --pseudo-labels cannot go with "
                          f"{'--plain' if config.plain else '--dense'}")
    if not 0.0 <= config.pseudo_threshold <= 1.0 or config.pseudo_start > 1.0 \
            or config.teacher_decay >= 1.0:
        raise OptionError("--pseudo-threshold and --pseudo-start are shares in [0, 1]; "
                          "--teacher-decay < 1")
    if config.forest_segments and (config.expand != "forest" or config.images is not None):
        raise OptionError("--forest-segments needs --expand forest on a dataset (--data); "
                          "rasters with --images / --points are labelled block by block")
    if config.forest_refresh and (config.expand != "forest" or config.images is not None):
        raise OptionError("--forest-refresh needs --expand forest on a dataset (--data); "
                          "rasters with --images / --points do not refresh their labels yet")
    return config


def parse_config(argv: list[str] | None = None, description: str | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of ``argv`` (default: the command line); a bad option exits
    with argparse's usage line and the reason."""
    p = build_parser(description)
    try:
        return resolve(p.parse_args(argv))
    except OptionError as exc:
        p.error(str(exc))
