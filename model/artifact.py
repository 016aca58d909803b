"""The exported-model contract, shared by the export and the serving runtime.

An exported GeoSeg model is one TorchScript file. The scripted network takes float32 RGB in
[0, 1], (N, 3, H, W), normalises inside, and returns a dict whose ``out`` is (N, C, H, W)
logits. The extra file :data:`META_FILE` inside it is JSON: ``format`` (:data:`META_FORMAT`),
``arch``, ``classes`` (a :class:`~model.class_table.ClassTable` as a dict), ``input`` (range,
normalisation) and ``output``, plus provenance (checkpoint, epoch, validation mIoU), the
training crop (:data:`TRAIN_TILE_SIZE`) and, for rasters that are not 8-bit, the per-band
scaling (:data:`BAND_SCALING`, ``handler.scaling``). Every key is spelled here once; the
:class:`Artifact` reads each as a typed field, absent ones (older exports) as None.

This module is archived with the handler (the TorchServe worker imports it), so it may import
only ``torch``, the standard library and :mod:`model.class_table`.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from model.class_table import ClassTable

META_FILE = "geoseg.json"
META_FORMAT = "geoseg-torchscript/1"
FOREST_FILE = "forest.npz"
"""Extra file of a model trained with forest labels: the clicks' features and class ids the
forest is refitted from (``training.labels.forest.ForestSamples.to_bytes``; arrays, no pickle).
Absent from other exports."""
FOREST_SAMPLES = "forest_samples"
"""The same bytes' key in a training checkpoint."""

ARCH = "arch"
CLASSES = "classes"
BAND_SCALING = "band_scaling"
"""Per-band scaling of rasters that are not 8-bit (``handler.scaling.BandScaling.to_meta``); the
same key holds it in a training checkpoint and in a point-layer run's metrics."""
TRAIN_TILE_SIZE = "train_tile_size"
"""Side in pixels of the crops the network was trained on."""
VAL_MIOU = "val_miou"

DEFAULT_TILE_SIZE = 512
"""Side in pixels of the tiles a model is run on unless its settings say otherwise (the
handler's ``tile_size``, the tiles an ONNX export takes)."""
DEFAULT_TILE_OVERLAP = 96
"""Pixels neighbouring tiles share unless the settings say otherwise (the handler's
``tile_overlap``, the overlap an ONNX export suggests to GIS plugins)."""
EPOCH = "epoch"
SOURCE_CHECKPOINT = "source_checkpoint"


class ArtifactError(ValueError):
    """A file that is not a GeoSeg export (no metadata, or metadata that cannot be read)."""


@dataclass(frozen=True)
class Artifact:
    """A loaded export: the scripted network (eval mode), its class table and metadata, the
    latter as typed fields (None where an older export lacks them) and whole in ``meta``."""

    network: torch.jit.ScriptModule
    classes: ClassTable
    meta: dict[str, Any]
    forest_samples: Optional[bytes] = None
    """:data:`FOREST_FILE`'s bytes, None where the model has none."""

    @property
    def arch(self) -> str:
        return str(self.meta.get(ARCH, "unknown"))

    @property
    def band_scaling(self) -> Optional[dict[str, Any]]:
        """The per-band scaling record (``handler.scaling.BandScaling.from_meta``), or None for
        a model trained on 8-bit rasters."""
        value = self.meta.get(BAND_SCALING)
        return dict(value) if value else None

    @property
    def train_tile_size(self) -> Optional[int]:
        value = self.meta.get(TRAIN_TILE_SIZE)
        return int(value) if value is not None else None

    @property
    def val_miou(self) -> Optional[float]:
        value = self.meta.get(VAL_MIOU)
        return float(value) if value is not None else None


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices: TorchScript is what TorchServe loads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        yield


def save_artifact(scripted: torch.jit.ScriptModule, meta: dict[str, Any], path: str | Path,
                  forest_samples: Optional[bytes] = None) -> None:
    """Write ``scripted`` with ``meta`` as its :data:`META_FILE` (and ``forest_samples`` as its
    :data:`FOREST_FILE` when given) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {META_FILE: json.dumps(meta)}
    if forest_samples:
        extra[FOREST_FILE] = forest_samples
    with quiet_jit():
        torch.jit.save(scripted, str(path), _extra_files=extra)


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load an export onto ``device``. Raises ArtifactError when it is not a GeoSeg export."""
    extra: dict[str, Any] = {META_FILE: "", FOREST_FILE: ""}
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as exc:  # torch's reader: "PytorchStreamReader failed ...", etc.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: not a TorchScript file ({first.split('. ')[0]}); export "
                            f"a model with `geoseg export`") from None
    if not extra[META_FILE]:
        raise ArtifactError(f"{path}: TorchScript file without {META_FILE}: not a GeoSeg export")
    try:
        meta = json.loads(extra[META_FILE])
        classes = ClassTable.from_dict(meta[CLASSES])
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable {META_FILE} ({exc})") from exc
    return Artifact(module.eval(), classes, meta, bytes(extra[FOREST_FILE]) or None)
