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

import math
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from common.allocator import keep_freed_memory
from common.cli import fail, show_messages, warn
from model.builder import PretrainedWeightsError
from model.checkpoint import CheckpointError
from model.class_table import ClassTable, ClassTableError
from training.config import OptionError, TrainConfig, parse_config
from training.data.sources import DatasetError
from training.labels.forest import ForestSamples
from training.labels.fusion import ForestFusion
from training.points.files import PointFileError
from training.points.options import PointInputError, Validation
from training.run.device import DeviceError, resolve_device
from training.run.distributed import DistributedError, Group, join, launch, under_torchrun
from training.run.inputs import training_data
from training.run.loop import run_epoch, training_loss
from training.run.records import (
    log_epoch,
    log_with_forest,
    run_config,
    single_class_warning,
    write_metrics,
)
from training.run.state import checkpoint_payload, new_run_state, resume_if_possible, save_checkpoints

RUN_FILES = ("last.pt", "best.pt")
"""A folder holding one of these holds a run: training into it needs --resume or --overwrite."""
OUTPUT_FILES = (*RUN_FILES, "metrics.json", "metrics.csv")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The run's :class:`~training.config.TrainConfig` from ``argv`` (default: the command line)."""
    return parse_config(argv, __doc__)


def out_folder_problem(args: TrainConfig) -> str | None:
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


def check_distributed(args: TrainConfig, device: torch.device, processes: int) -> None:
    """Options that a run of ``processes`` processes on ``device`` cannot honour."""
    if args.sync_bn and processes > 1 and device.type != "cuda":
        raise OptionError(f"--sync-bn needs CUDA devices (SyncBatchNorm does not run on "
                          f"{device.type}); leave it out when training on {device.type}")


def log_start(args: TrainConfig, group: Group, steps: int) -> None:
    """A distributed run says what it is: processes, backend, per-process and global batch."""
    if group.active:
        print(f"distributed: {group.world_size} processes ({group.backend}, "
              f"{'one GPU each' if group.device.type == 'cuda' else 'CPU'}), "
              f"batch {args.batch_size} per process, global batch "
              f"{args.batch_size * group.world_size}, {steps} steps per epoch"
              f"{', SyncBatchNorm' if args.sync_bn else ''}", flush=True)


def train(args: TrainConfig, group: Group | None = None) -> dict[str, Any]:
    """Run the training described by ``args`` as one process of ``group`` (None: a single
    process on ``--device``); returns the best epoch's record."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    group = group or Group(device=resolve_device(args.device))
    device = group.device
    check_distributed(args, device, group.world_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset, validate, table, data, forest_samples = training_data(args, group)
    steps = args.steps_per_epoch or math.ceil(len(dataset) / (args.batch_size * group.world_size))
    state = new_run_state(args, table, device, steps * args.epochs, group)
    loss_of = training_loss(args, device, state.teacher)
    config = run_config(args, device, data, steps, table, group)
    log_start(args, group, steps)
    if args.resume:
        more = resume_if_possible(state, out / "last.pt", args, table)
        group.agree(state.start_epoch, "the epochs already done (every process must read the "
                                       "same --out: put it on storage that every machine sees)")
        if not more:
            return state.best_record()  # the run had finished all its epochs: nothing to train
    state.trainer = group.wrap(state.model) if group.active else None
    samples_file = forest_samples.to_bytes() if forest_samples is not None else None

    best_record = state.best_record()
    stop = args.epochs if not args.stop_after else min(args.epochs, state.start_epoch + args.stop_after)
    for epoch in range(state.start_epoch, stop):
        record = run_epoch(epoch, args, state, dataset, loss_of, steps, validate, device, out,
                           group)
        improved = state.add(record)
        if improved:
            best_record = record
        if group.is_main:
            if args.overwrite and epoch == state.start_epoch:
                remove_previous_run(out)  # only now: a run that fails in its first epoch keeps the old one
            save_checkpoints(out, checkpoint_payload(args, table, config, state, epoch,
                                                     samples_file), improved)
            write_metrics(out, config, state.history)
            log_epoch(record, args.epochs)
    if forest_samples is not None and stop == args.epochs > state.start_epoch:  # a whole run
        with_forest = final_map_with_forest(state.model, validate, forest_samples, table, device,
                                            not args.no_progress)
        if group.is_main:
            write_metrics(out, config, state.history, with_forest)
            log_with_forest(with_forest, state.history[-1])
    if group.is_main and state.history:
        problem = single_class_warning(state.history[-1], table)
        if problem:
            warn(problem)
    return best_record


def final_map_with_forest(model: torch.nn.Module, validate: Validation, samples: ForestSamples,
                          table: ClassTable, device: torch.device, progress: bool
                          ) -> dict[str, Any]:
    """The validation record of the final network's map with the forest fitted on ``samples``
    (:mod:`training.labels.fusion`: what ``geoseg predict`` draws with the exported model), and
    the forest's seconds."""
    model.eval()
    fusion = ForestFusion(samples, table.num_classes)
    record = validate(model, device, progress, None, 0, fusion)
    return record | {"forest_seconds": {k: round(v, 2) for k, v in asdict(fusion.timings).items()}}


def launch_problem(args: TrainConfig) -> str | None:
    """Why ``--nproc`` processes cannot start as asked (one line), or None: checked once before
    torchrun starts them, so the usual mistakes give one line rather than one per process."""
    problem = out_folder_problem(args)
    if problem:
        return problem
    try:
        processes = args.nproc or 1
        device = resolve_device(args.device, 0, processes)
        check_distributed(args, device, processes)
    except (DeviceError, OptionError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    show_messages()
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
