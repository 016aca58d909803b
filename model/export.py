"""Export a trained GeoSeg checkpoint as a self-describing TorchScript file.

The file holds the scripted network (input: float32 RGB in [0, 1], (N, 3, H, W); output: dict
with ``out`` (N, C, H, W) logits; normalisation inside) and, as the extra file ``geoseg.json``,
the class table, the normalisation constants and the architecture. Export checks parity of the
scripted against the eager network and fails when the max abs logit difference exceeds 1e-4.

    python -m model.export --checkpoint runs/demo/best.pt --out model/geoseg.pt
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch

from common.cli import at_least, blocked_path, existing_file, fail, parser, refuse_overwrite
from model.artifact import (
    ARCH,
    BAND_SCALING,
    CLASSES,
    EPOCH,
    META_FORMAT,
    SOURCE_CHECKPOINT,
    TRAIN_TILE_SIZE,
    VAL_MIOU,
    quiet_jit,
    save_artifact,
)
from model.builder import IMAGENET_MEAN, IMAGENET_STD, NormalizedSegmenter
from model.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from model.class_table import ClassTable

PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The scripted network disagrees with the eager one."""


def script_model(model: NormalizedSegmenter) -> torch.jit.ScriptModule:
    """Script an eval-mode copy of ``model`` without its auxiliary head."""
    model = copy.deepcopy(model).eval()
    if getattr(model.net, "aux_classifier", None) is not None:
        # torchvision lists aux_classifier in __constants__: it must leave _modules before
        # it can become the constant None that the scripted forward branches on.
        del model.net.aux_classifier
        setattr(model.net, "aux_classifier", None)  # noqa: B010 (typed as a Module)
    with quiet_jit():
        return torch.jit.script(model)


def export_meta(table: ClassTable, arch: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``geoseg.json`` record that travels inside the exported file."""
    return {
        "format": META_FORMAT,
        ARCH: arch,
        CLASSES: table.to_dict(),
        "input": {"channels": "RGB", "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
                  "normalisation": "inside the model", "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD)},
        "output": {"key": "out", "shape": "N, C, H, W", "kind": "logits"},
        **(extra or {}),
    }


def parity(eager: torch.nn.Module, scripted: torch.jit.ScriptModule, size: int = 128,
           seed: int = 0) -> float:
    """Max abs difference of ``out`` logits, eager vs scripted, on one random (1, 3, size, size)."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return float((eager.eval()(x)["out"] - scripted(x)["out"]).abs().max())


def export_model(model: NormalizedSegmenter, table: ClassTable, arch: str, out: str | Path,
                 extra: dict[str, Any] | None = None, parity_size: int = 128) -> float:
    """Script ``model``, check it against the eager one on a (1, 3, parity_size, parity_size)
    input and save it with its metadata to ``out``; returns the parity difference (raises
    ParityError above :data:`PARITY_TOLERANCE`)."""
    scripted = script_model(model)
    diff = parity(model, scripted, parity_size)
    if not diff <= PARITY_TOLERANCE:
        raise ParityError(f"scripted model differs from eager by {diff:.3g} > {PARITY_TOLERANCE}")
    save_artifact(scripted, export_meta(table, arch, extra), out)
    return diff


def export_checkpoint(checkpoint: str | Path, out: str | Path, parity_size: int = 128) -> float:
    """Checkpoint -> TorchScript file; returns the parity difference (raises ParityError)."""
    ckpt = read_checkpoint(checkpoint)
    model, table = model_from_checkpoint(ckpt, checkpoint)
    extra = {SOURCE_CHECKPOINT: Path(checkpoint).name, EPOCH: ckpt.get("epoch"),
             VAL_MIOU: ckpt.get("best_miou"), TRAIN_TILE_SIZE: ckpt.get("crop_size")}
    if ckpt.get(BAND_SCALING):
        extra[BAND_SCALING] = ckpt[BAND_SCALING]  # rasters that are not 8-bit: handler.scaling
    return export_model(model, table, ckpt["arch"], out, extra, parity_size)


def main(argv: list[str] | None = None) -> int:
    p = parser("geoseg export", __doc__)
    p.add_argument("--checkpoint", type=existing_file, required=True,
                   help="GeoSeg training checkpoint (.pt)")
    p.add_argument("--out", type=Path, default=Path("model/geoseg.pt"), help="TorchScript file to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists (it may be the model that `geoseg serve` ships)")
    p.add_argument("--parity-size", type=at_least(1), default=128,
                   help="side in pixels of the random image used for the parity check")
    args = p.parse_args(argv)
    if args.out.is_dir():
        return fail(f"--out {args.out} is a folder; give the file to write")
    refusal = blocked_path(args.out) or refuse_overwrite(args.out, args.overwrite)
    if refusal:
        return fail(refusal)
    try:
        diff = export_checkpoint(args.checkpoint, args.out, args.parity_size)
    except CheckpointError as exc:
        return fail(str(exc))
    except ParityError as exc:
        return fail(str(exc), 1)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB); parity max |eager - scripted| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
