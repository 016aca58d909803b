"""Train a GeoSeg segmenter from sparse point labels (or dense masks, for comparison).

Points are simulated from the dense training masks (``--points-per-class N``, fixed per image
and seed) or read from a point file (``--point-file``: CSV, GeoJSON, or a folder of sparse PNGs).
Every epoch is evaluated on the dense validation masks. The run folder gets ``last.pt``,
``best.pt`` (by validation mIoU), ``metrics.json`` / ``metrics.csv``, and ``pictures/``
(image | points | prediction | ground truth per validation image).

    python -m training.train --data data/synthetic --out runs/demo --points-per-class 10
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.builder import ARCHITECTURES, PretrainedWeightsError, build_model
from model.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from model.class_table import ClassTable, ClassTableError
from training.data import DatasetError, PointSupervisedDataset, epoch_draws
from training.dataset_args import add_data_args, load_table, open_source
from training.device import DeviceError, resolve_device
from training.evaluate import evaluate_source, predictor
from training.losses import PartialFocalCELoss
from training.metrics import scores
from training.points import PointFileError, georeferencing, read_point_annotations

AUX_WEIGHT = 0.4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, pictures)")
    sup = p.add_argument_group("supervision")
    sup.add_argument("--points-per-class", type=int, default=10,
                     help="points simulated per class present in each training image")
    sup.add_argument("--point-file", default=None,
                     help="real point annotations (CSV image,x,y,class / GeoJSON / PNG folder)")
    sup.add_argument("--dense", action="store_true",
                     help="train on the dense masks instead (full supervision baseline)")
    sup.add_argument("--gamma", type=float, default=2.0, help="focal exponent (0: partial CE)")
    sup.add_argument("--alpha", type=float, nargs="*", default=None, help="per-class weights")
    net = p.add_argument_group("model")
    net.add_argument("--arch", choices=tuple(ARCHITECTURES), default="deeplabv3_resnet50")
    net.add_argument("--pretrained", default="none",
                     help="backbone weights: none, imagenet (needs network or cache), or a .pth")
    net.add_argument("--aux-loss", action="store_true", help="train the auxiliary head too")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=10)
    opt.add_argument("--steps-per-epoch", type=int, default=0,
                     help="optimizer steps per epoch (0: one pass over the training images)")
    opt.add_argument("--batch-size", type=int, default=8)
    opt.add_argument("--crop-size", type=int, default=256, help="training crop side, pixels")
    opt.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    opt.add_argument("--lr", type=float, default=1e-3)
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--num-workers", type=int, default=0, help="data loader processes")
    run.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    run.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    run.add_argument("--stop-after", type=int, default=0,
                     help="stop after this many epochs of this invocation (time-limited jobs); "
                          "continue later with --resume")
    run.add_argument("--max-pictures", type=int, default=8, help="validation pictures to write")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.points_per_class < 1 and not args.dense:
        p.error("--points-per-class must be at least 1 (or use --dense)")
    if min(args.epochs, args.batch_size, args.crop_size) < 1 or args.steps_per_epoch < 0:
        p.error("--epochs, --batch-size and --crop-size must be positive")
    return args


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
                    progress: bool) -> list[float]:
    """One pass over ``loader``: AMP and channels_last on CUDA, the aux head weighted by
    AUX_WEIGHT when present. Returns the loss of each step."""
    cuda = device.type == "cuda"
    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=bar_title, unit="step", disable=not progress, leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.float16, enabled=cuda):
            outputs = model(images)
            loss = criterion(outputs["out"], labels)
            if "aux" in outputs:
                loss = loss + AUX_WEIGHT * criterion(outputs["aux"], labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def write_metrics(out: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """``metrics.json`` (config + one record per epoch) and a flat ``metrics.csv``."""
    (out / "metrics.json").write_text(json.dumps({"config": config, "epochs": history},
                                                 indent=2) + "\n")
    rows = [{k: v for k, v in r.items() if k != "val_iou"}
            | {f"iou_{n}": v for n, v in r["val_iou"].items()} for r in history]
    if rows:
        with (out / "metrics.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the training described by ``args``; returns the best epoch's record."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    progress = not args.no_progress

    table: ClassTable = load_table(args)
    train_source = open_source(args, "train", table)
    val_source = open_source(args, "val", table)
    annotations = None
    if args.point_file:
        sizes = {k: train_source.size(i) for i, k in enumerate(train_source.keys)}
        transforms = {}
        if hasattr(train_source, "image_file"):
            found = {k: georeferencing(train_source.image_file(i))
                     for i, k in enumerate(train_source.keys)}
            transforms = {k: t for k, t in found.items() if t is not None}
        annotations = read_point_annotations(args.point_file, table, sizes, transforms)
    points_per_class = None if args.dense else args.points_per_class
    dataset = PointSupervisedDataset(train_source, points_per_class, args.seed, args.crop_size,
                                     augment=True, annotations=annotations)
    steps = args.steps_per_epoch or math.ceil(len(dataset) / args.batch_size)
    total_steps = steps * args.epochs

    torch.manual_seed(args.seed)
    model = build_model(args.arch, table.num_classes, args.pretrained, args.aux_loss).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    criterion = PartialFocalCELoss(args.gamma, args.alpha).to(device)
    optimizer = build_optimizer(args, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    config = vars(args) | {"device": str(device), "train_images": len(train_source),
                           "val_images": len(val_source), "steps_per_epoch": steps,
                           "classes": list(table.names)}
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, -1.0
    if args.resume and (out / "last.pt").is_file():
        ckpt = read_checkpoint(out / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best_miou"], ckpt["history"]
        print(f"resumed from {out / 'last.pt'} after epoch {ckpt['epoch']}")

    best_record: dict[str, Any] = max(history, key=lambda r: r["val_miou"], default={})
    stop = args.epochs if not args.stop_after else min(args.epochs, start_epoch + args.stop_after)
    for epoch in range(start_epoch, stop):
        t0 = time.time()
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=args.batch_size,
                            sampler=epoch_draws(len(dataset), steps * args.batch_size,
                                                args.seed, epoch),
                            num_workers=args.num_workers, pin_memory=cuda)
        losses = train_one_epoch(model, loader, criterion, optimizer, scheduler, scaler, device,
                                 f"epoch {epoch + 1}/{args.epochs}", progress)
        model.eval()
        cm = evaluate_source(predictor(model, device, amp=cuda), val_source, table,
                             out / "pictures", args.max_pictures,
                             args.points_per_class if args.points_per_class > 0 else 10,
                             args.seed, progress)
        result = scores(cm)
        record = {"epoch": epoch, "step": (epoch + 1) * steps,
                  "train_loss": float(np.mean(losses)) if losses else 0.0,
                  "val_miou": result.miou, "val_pixel_accuracy": result.pixel_accuracy,
                  "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2),
                  "val_iou": result.as_dict(table.names)["iou"]}
        history.append(record)
        improved = result.miou > best
        best = max(best, result.miou)
        if improved:
            best_record = record
        payload = {"arch": args.arch, "aux_loss": args.aux_loss, "classes": table.to_dict(),
                   "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                   "epoch": epoch, "best_miou": best, "history": history,
                   "crop_size": args.crop_size, "config": config,
                   "rng": {"torch": torch.get_rng_state()}}
        save_checkpoint(out / "last.pt", payload)
        if improved:
            save_checkpoint(out / "best.pt", payload)
        write_metrics(out, config, history)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {record['train_loss']:.4f}  "
              f"val mIoU {100 * result.miou:.2f}%  acc {100 * result.pixel_accuracy:.2f}%  "
              f"({record['seconds']:.0f} s)", flush=True)
    return best_record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        best = train(args)
    except (DatasetError, PointFileError, PretrainedWeightsError, CheckpointError,
            ClassTableError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if best:
        print(f"best val mIoU {100 * best['val_miou']:.2f}% at epoch {best['epoch'] + 1}; "
              f"checkpoints in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
