"""Evaluate a checkpoint or exported TorchScript file on dense masks: per-class IoU and mIoU.

    python -m training.run.evaluate --model model/geoseg.pt --data data/synthetic --split val
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from common.cli import at_least, blocked_path, existing_file, fail, parser, refuse_overwrite
from handler.inference import HandlerConfig, tile_predictor
from handler.tiling import blended_scores, segment_images
from model.artifact import FOREST_SAMPLES, load_artifact
from model.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from model.class_table import ClassTable, ClassTableError
from training.data.options import add_data_args, open_source
from training.data.sources import DatasetError, SampleSource, image_from_tensor, to_tensors
from training.labels.forest import ForestSamples
from training.labels.fusion import ForestFusion
from training.points.files import Points, simulate_points
from training.run.device import DeviceError, resolve_device
from training.run.metrics import SegmentationScores, confusion_matrix, scores
from training.run.pictures import comparison_picture, save_picture

Predictor = Callable[..., torch.Tensor]
"""(1, 3, H, W) float in [0, 1] -> (1, H, W) class ids. A predictor that tiles takes an optional
keyword ``margin``: the context reflected at the image's edges (None: the handler's default;
0 for a window of a larger raster that carries its own context, as ``geoseg predict`` reads)."""


def predictor(model: torch.nn.Module, device: torch.device, amp: bool = False,
              config: Optional[HandlerConfig] = None,
              fusion: Optional[ForestFusion] = None) -> Predictor:
    """Wrap a network returning ``{"out": logits}`` (eval mode) into a predictor that segments
    an image exactly as the TorchServe handler and ``geoseg predict`` do: ``handler.tiling``'s
    tiles of ``config`` (None: ``HandlerConfig()``, the served defaults), blended the same way,
    so validation scores what a user gets. ``amp``: float16 autocast (CUDA). With ``fusion``,
    the map of network and forest together (:mod:`training.labels.fusion`), as ``geoseg
    predict`` draws it for a model that carries its forest."""
    config = config or HandlerConfig()
    scores = tile_predictor(model, device, scores=config.blended or fusion is not None)
    lone = tile_predictor(model, device) if config.blended else None  # one-tile images, as served
    micro_batch = config.tile_batch_size or 1   # a padded batch of 16 would cost 16 tiles each

    def predict(x: torch.Tensor, margin: Optional[int] = None) -> torch.Tensor:
        image = image_from_tensor(x[0])
        with torch.autocast(device.type, torch.float16, enabled=amp):
            if fusion is not None:
                (probs,) = blended_scores([image], scores, config.tile_size, config.tile_overlap,
                                          micro_batch, [margin])
                return torch.from_numpy(fusion.classes(image, probs))[None]
            (ids,) = segment_images([image], scores, config.tile_size, config.tile_overlap,
                                    micro_batch, [margin], lone_ids=lone)
        return torch.from_numpy(ids)[None]
    return predict


def evaluate_source(predict: Predictor, source: SampleSource, table: ClassTable,
                    picture_dir: Optional[Path] = None, max_pictures: int = 0,
                    points_per_class: int = 10, seed: int = 0, progress: bool = True,
                    annotations: Optional[Mapping[str, Points]] = None) -> np.ndarray:
    """Confusion matrix (C, C) of ``predict`` over every image of ``source``.

    The first ``max_pictures`` images also get a picture ``<picture_dir>/<key>.png`` showing
    their points in ``annotations`` (a point file's) when it names them, else the points a
    ``points_per_class`` annotation would give.
    """
    cm = np.zeros((table.num_classes, table.num_classes), dtype=np.int64)
    for index in tqdm(range(len(source)), desc="evaluate", unit="img", disable=not progress,
                      leave=False):
        sample = source.load(index)
        x, _ = to_tensors(sample.image, sample.mask)
        pred = predict(x.unsqueeze(0))[0].numpy().astype(np.uint8)
        cm += confusion_matrix(pred, sample.mask, table.num_classes)
        if picture_dir is not None and index < max_pictures:
            if annotations is not None and sample.key in annotations:
                points = annotations[sample.key]
            else:
                points = simulate_points(sample.mask, points_per_class, [seed, index])
            save_picture(picture_dir / f"{sample.key.replace('/', '_')}.png",
                         comparison_picture(sample.image, points, pred, sample.mask, table))
    return cm


def load_for_evaluation(path: str | Path, device: torch.device
                        ) -> tuple[torch.nn.Module, ClassTable]:
    """A checkpoint (``.pt`` from training) or an exported TorchScript file, and its table."""
    model, table, _ = load_with_forest(path, device)
    return model, table


def load_with_forest(path: str | Path, device: torch.device
                     ) -> tuple[torch.nn.Module, ClassTable, Optional[ForestSamples]]:
    """:func:`load_for_evaluation` and the forest samples the file carries (a model trained with
    forest labels), or None. Raises CheckpointError when they cannot be read."""
    model: torch.nn.Module
    try:
        artifact = load_artifact(path, device)
        model, table, data = artifact.network, artifact.classes, artifact.forest_samples
    except (RuntimeError, ValueError):
        ckpt = read_checkpoint(path)
        model, table = model_from_checkpoint(ckpt, path)
        model, data = model.to(device).eval(), ckpt.get(FOREST_SAMPLES)
    try:
        return model, table, ForestSamples.from_bytes(data) if data else None
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable forest samples ({exc})") from None


def format_scores(result: SegmentationScores, table: ClassTable) -> str:
    lines = [f"{'class':<16}{'IoU %':>8}"]
    for name, iou in zip(table.names, result.iou):
        lines.append(f"{name:<16}{'n/a' if np.isnan(iou) else f'{100 * iou:.2f}':>8}")
    lines.append(f"{'mIoU':<16}{100 * result.miou:>8.2f}")
    lines.append(f"{'pixel accuracy':<16}{100 * result.pixel_accuracy:>8.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("geoseg evaluate", __doc__)
    p.add_argument("--model", type=existing_file, required=True,
                   help="checkpoint or exported TorchScript file")
    p.add_argument("--split", choices=("train", "val", "test"), default="val",
                   help="dataset split to score")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", type=Path, default=None, help="also write the scores to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace --json if it exists")
    p.add_argument("--pictures", type=Path, default=None,
                   help="folder for comparison pictures (pictures of the same images are replaced)")
    p.add_argument("--max-pictures", type=at_least(0), default=8,
                   help="pictures to write into --pictures")
    p.add_argument("--no-forest", action="store_true",
                   help="score the network alone, also for a model that carries its forest "
                        "(trained with forest labels: by default its map is network and forest "
                        "together, as geoseg predict draws it)")
    add_data_args(p)
    return p.parse_args(argv)


def output_problem(args: argparse.Namespace) -> str | None:
    """Why the scores or pictures could not be written where the options say, or None."""
    if args.json is not None:
        if args.json.is_dir():
            return f"--json {args.json} is a folder"
        refusal = blocked_path(args.json) or refuse_overwrite(args.json, args.overwrite)
        if refusal:
            return f"--json: {refusal}"
    if args.pictures is not None and blocked_path(args.pictures):
        return f"--pictures: {blocked_path(args.pictures)}"
    if args.pictures is not None and args.pictures.exists() and not args.pictures.is_dir():
        return f"--pictures {args.pictures} is a file, not a folder"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = output_problem(args)
    if problem:
        return fail(problem)
    try:
        device = resolve_device(args.device)
        model, table, samples = load_with_forest(args.model, device)
        source = open_source(args, args.split, table)
        fusion = None if samples is None or args.no_forest else ForestFusion(samples, table.num_classes)
        if fusion is not None:
            print(f"map: network and forest together ({len(fusion.samples.y)} clicks; --no-forest: "
                  f"the network alone)")
        cm = evaluate_source(predictor(model, device, fusion=fusion), source, table,
                             args.pictures, args.max_pictures)
    except (CheckpointError, DatasetError, ClassTableError, DeviceError) as exc:
        return fail(str(exc))
    result = scores(cm)
    print(format_scores(result, table))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(table.names), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
