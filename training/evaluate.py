"""Evaluate a checkpoint or exported TorchScript file on dense masks: per-class IoU and mIoU.

    python -m training.evaluate --model model/geoseg.pt --data data/synthetic --split val
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from model.class_table import ClassTable, ClassTableError
from model.artifact import load_artifact
from training.data import DatasetError, SampleSource, to_tensors
from training.dataset_args import add_data_args, open_source
from training.device import DeviceError, resolve_device
from training.metrics import SegmentationScores, confusion_matrix, scores
from training.points import simulate_points
from training.visualize import comparison_picture, save_picture

Predictor = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, H, W) float [0, 1] -> (1, H, W) ids


def predictor(model: torch.nn.Module, device: torch.device, amp: bool = False) -> Predictor:
    """Wrap a network returning ``{"out": logits}`` into an argmax predictor on ``device``."""
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=amp):
            return model(x.to(device))["out"].argmax(1).cpu()
    return predict


def evaluate_source(predict: Predictor, source: SampleSource, table: ClassTable,
                    picture_dir: Optional[Path] = None, max_pictures: int = 0,
                    points_per_class: int = 10, seed: int = 0, progress: bool = True
                    ) -> np.ndarray:
    """Confusion matrix (C, C) of ``predict`` over every image of ``source``.

    The first ``max_pictures`` images also get a picture ``<picture_dir>/<key>.png`` showing the
    points a ``points_per_class`` annotation would give.
    """
    cm = np.zeros((table.num_classes, table.num_classes), dtype=np.int64)
    for index in tqdm(range(len(source)), desc="evaluate", unit="img", disable=not progress,
                      leave=False):
        sample = source.load(index)
        x, _ = to_tensors(sample.image, sample.mask)
        pred = predict(x.unsqueeze(0))[0].numpy().astype(np.uint8)
        cm += confusion_matrix(pred, sample.mask, table.num_classes)
        if picture_dir is not None and index < max_pictures:
            points = simulate_points(sample.mask, points_per_class, [seed, index])
            save_picture(picture_dir / f"{sample.key.replace('/', '_')}.png",
                         comparison_picture(sample.image, points, pred, sample.mask, table))
    return cm


def load_for_evaluation(path: str | Path, device: torch.device
                        ) -> tuple[torch.nn.Module, ClassTable]:
    """A checkpoint (``.pt`` from training) or an exported TorchScript file, and its table."""
    try:
        artifact = load_artifact(path, device)
        return artifact.network, artifact.classes
    except (RuntimeError, ValueError):
        model, table = model_from_checkpoint(read_checkpoint(path))
        return model.to(device).eval(), table


def format_scores(result: SegmentationScores, table: ClassTable) -> str:
    lines = [f"{'class':<16}{'IoU %':>8}"]
    for name, iou in zip(table.names, result.iou):
        lines.append(f"{name:<16}{'n/a' if np.isnan(iou) else f'{100 * iou:.2f}':>8}")
    lines.append(f"{'mIoU':<16}{100 * result.miou:>8.2f}")
    lines.append(f"{'pixel accuracy':<16}{100 * result.pixel_accuracy:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint or exported TorchScript file")
    parser.add_argument("--split", default="val", help="train, val or test")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    parser.add_argument("--pictures", default=None, help="folder for comparison pictures")
    parser.add_argument("--max-pictures", type=int, default=8)
    add_data_args(parser)
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        model, table = load_for_evaluation(args.model, device)
        source = open_source(args, args.split, table)
        cm = evaluate_source(predictor(model, device), source, table,
                             Path(args.pictures) if args.pictures else None, args.max_pictures)
    except (CheckpointError, DatasetError, ClassTableError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = scores(cm)
    print(format_scores(result, table))
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(table.names), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
