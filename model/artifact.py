"""The exported-model contract, shared by the export and the serving runtime.

An exported GeoSeg model is one TorchScript file. The scripted network takes float32 RGB in
[0, 1], (N, 3, H, W), normalises inside, and returns a dict whose ``out`` is (N, C, H, W)
logits. The extra file :data:`META_FILE` inside it is JSON: ``format`` (:data:`META_FORMAT`),
``arch``, ``classes`` (a :class:`~model.class_table.ClassTable` as a dict), ``input`` (range,
normalisation) and ``output``, plus provenance (checkpoint, epoch, validation mIoU).

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
from typing import Any

import torch

from model.class_table import ClassTable

META_FILE = "geoseg.json"
META_FORMAT = "geoseg-torchscript/1"


class ArtifactError(ValueError):
    """A file that is not a GeoSeg export (no metadata, or metadata that cannot be read)."""


@dataclass(frozen=True)
class Artifact:
    """A loaded export: the scripted network (eval mode), its class table and raw metadata."""

    network: torch.jit.ScriptModule
    classes: ClassTable
    meta: dict[str, Any]

    @property
    def arch(self) -> str:
        return str(self.meta.get("arch", "unknown"))


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices: TorchScript is what TorchServe loads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        yield


def save_artifact(scripted: torch.jit.ScriptModule, meta: dict[str, Any], path: str | Path) -> None:
    """Write ``scripted`` with ``meta`` as its :data:`META_FILE` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_jit():
        torch.jit.save(scripted, str(path), _extra_files={META_FILE: json.dumps(meta)})


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load an export onto ``device``. Raises ArtifactError when it is not a GeoSeg export."""
    extra = {META_FILE: ""}
    with quiet_jit():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    if not extra[META_FILE]:
        raise ArtifactError(f"{path}: TorchScript file without {META_FILE}: not a GeoSeg export")
    try:
        meta = json.loads(extra[META_FILE])
        classes = ClassTable.from_dict(meta["classes"])
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable {META_FILE} ({exc})") from exc
    return Artifact(module.eval(), classes, meta)
