"""GeoSeg checkpoints: one ``.pt`` file holding weights, architecture and class table.

Written atomically (temporary file in the same folder, then rename), so a crash mid-write never
leaves a broken checkpoint behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from model.builder import NormalizedSegmenter, build_model
from model.class_table import ClassTable, ClassTableError

CHECKPOINT_FORMAT = "geoseg-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a usable GeoSeg checkpoint."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (must hold ``arch``, ``classes``, ``model``) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (on CPU). Raises CheckpointError with the file named."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a GeoSeg checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint"
                          ) -> tuple[NormalizedSegmenter, ClassTable]:
    """Rebuild the network (random init, then the saved weights) and its class table.

    Raises CheckpointError, naming ``source``, when the checkpoint lacks a field or its weights
    do not fit its architecture."""
    try:
        table = ClassTable.from_dict(ckpt["classes"])
        model = build_model(ckpt["arch"], table.num_classes, pretrained="none",
                            aux_loss=bool(ckpt.get("aux_loss", False)))
        model.load_state_dict(ckpt["model"])
    except KeyError as exc:
        raise CheckpointError(f"{source}: checkpoint without the field {exc}") from exc
    except (ClassTableError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source}: unusable checkpoint ({str(exc).splitlines()[0]})") from exc
    return model, table
