"""Export a trained GeoSeg checkpoint as a self-describing TorchScript file.

The file holds the scripted network (input: float32 RGB in [0, 1], (N, 3, H, W); output: dict
with ``out`` (N, C, H, W) logits; normalisation inside) and, as the extra file ``geoseg.json``,
the class table, the normalisation constants and the architecture. Export checks parity of the
scripted against the eager network and fails when the max abs logit difference exceeds 1e-4.

    python -m model.export --checkpoint runs/demo/best.pt --out model/geoseg.pt

``--format onnx`` writes the network for QGIS's Deepness plugin and onnxruntime instead
(``model.onnx_export``), ``--format dlpk`` an ArcGIS Pro deep learning package around that ONNX
file (``model.dlpk``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from common.cli import at_least, blocked_path, existing_file, fail, parser, refuse_overwrite
from model.artifact import (
    ARCH,
    BAND_SCALING,
    CLASSES,
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    EPOCH,
    FOREST_SAMPLES,
    META_FORMAT,
    SOURCE_CHECKPOINT,
    TRAIN_TILE_SIZE,
    VAL_MIOU,
    quiet_jit,
    save_artifact,
)
from model.builder import IMAGENET_MEAN, IMAGENET_STD, NormalizedSegmenter, without_aux_head
from model.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from model.class_table import ClassTable
from model.dlpk import write_dlpk
from model.onnx_export import OnnxParityError, TilingHint, export_onnx, training_resolution_cm

PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The scripted network disagrees with the eager one."""


def script_model(model: NormalizedSegmenter) -> torch.jit.ScriptModule:
    """Script an eval-mode copy of ``model`` without its auxiliary head."""
    with quiet_jit():
        return torch.jit.script(without_aux_head(model))


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
                 extra: dict[str, Any] | None = None, parity_size: int = 128,
                 forest_samples: bytes | None = None) -> float:
    """Script ``model``, check it against the eager one on a (1, 3, parity_size, parity_size)
    input and save it with its metadata (and the ``forest_samples`` of a run with forest
    labels) to ``out``; returns the parity difference (raises ParityError above
    :data:`PARITY_TOLERANCE`)."""
    scripted = script_model(model)
    diff = parity(model, scripted, parity_size)
    if not diff <= PARITY_TOLERANCE:
        raise ParityError(f"scripted model differs from eager by {diff:.3g} > {PARITY_TOLERANCE}")
    save_artifact(scripted, export_meta(table, arch, extra), out, forest_samples)
    return diff


def export_checkpoint(checkpoint: str | Path, out: str | Path, parity_size: int = 128) -> float:
    """Checkpoint -> TorchScript file; returns the parity difference (raises ParityError)."""
    ckpt = read_checkpoint(checkpoint)
    model, table = model_from_checkpoint(ckpt, checkpoint)
    extra = {SOURCE_CHECKPOINT: Path(checkpoint).name, EPOCH: ckpt.get("epoch"),
             VAL_MIOU: ckpt.get("best_miou"), TRAIN_TILE_SIZE: ckpt.get("crop_size")}
    if ckpt.get(BAND_SCALING):
        extra[BAND_SCALING] = ckpt[BAND_SCALING]  # rasters that are not 8-bit: handler.scaling
    return export_model(model, table, ckpt["arch"], out, extra, parity_size,
                        ckpt.get(FOREST_SAMPLES))


FORMATS = ("torchscript", "onnx", "dlpk")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "dlpk": ".dlpk"}


def format_of(out: Path | None) -> str:
    """The export format that the suffix of ``out`` names (torchscript for any other)."""
    suffix = out.suffix.lower() if out is not None else ""
    return next((fmt for fmt, ending in SUFFIXES.items() if ending == suffix), "torchscript")


def export_gis(checkpoint: str | Path, out: Path, fmt: str, tile: int, overlap: int,
               resolution_cm: float | None) -> str:
    """Checkpoint -> ONNX file or ArcGIS package; returns the line that reports its parity."""
    ckpt = read_checkpoint(checkpoint)
    model, table = model_from_checkpoint(ckpt, checkpoint)
    if resolution_cm is None:
        resolution_cm = training_resolution_cm(ckpt.get("config") or {})
    hint = TilingHint(tile, overlap, resolution_cm)
    onnx_path = out if fmt == "onnx" else out.with_name(out.stem + ".onnx.part")
    result = export_onnx(model, table, ckpt["arch"], onnx_path, hint, ckpt.get(BAND_SCALING),
                         ckpt.get("crop_size"))
    if fmt == "dlpk":
        try:
            write_dlpk(onnx_path, out)
        finally:
            onnx_path.unlink(missing_ok=True)
    return (f"onnxruntime vs PyTorch on {result.tiles} tiles of {tile} px: argmax agrees on "
            f"{result.agreement:.4%} of pixels, max |probability difference| "
            f"{result.max_probability_difference:.1e}")


def main(argv: list[str] | None = None) -> int:
    p = parser("geoseg export", __doc__)
    p.add_argument("--checkpoint", type=existing_file, required=True,
                   help="GeoSeg training checkpoint (.pt)")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write (default: model/geoseg.pt, .onnx or .dlpk by --format)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="torchscript: for TorchServe and geoseg predict; onnx: for QGIS "
                        "(Deepness), onnxruntime and geoseg predict; dlpk: for ArcGIS Pro "
                        "(default: by the suffix of --out, .onnx or .dlpk, else torchscript)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists (it may be the model that `geoseg serve` ships)")
    p.add_argument("--parity-size", type=at_least(1), default=128,
                   help="side in pixels of the random image used for the TorchScript parity check")
    gis = p.add_argument_group("onnx and dlpk")
    gis.add_argument("--tile-size", type=at_least(16), default=DEFAULT_TILE_SIZE,
                     help="side in pixels of the square tiles the exported network takes")
    gis.add_argument("--tile-overlap", type=at_least(0), default=DEFAULT_TILE_OVERLAP,
                     help="pixels neighbouring tiles should share (written as a percentage for "
                          "Deepness, as padding for ArcGIS)")
    gis.add_argument("--resolution", type=at_least(0.0, float), default=None,
                     help="ground resolution of the training imagery in cm per pixel (default: "
                          "read from the training rasters when the run had them)")
    args = p.parse_args(argv)
    fmt = args.format or format_of(args.out)
    out = args.out or Path("model/geoseg" + SUFFIXES[fmt])
    if out.is_dir():
        return fail(f"--out {out} is a folder; give the file to write")
    if 2 * args.tile_overlap >= args.tile_size:
        return fail(f"--tile-overlap {args.tile_overlap} must be less than half of --tile-size")
    refusal = blocked_path(out) or refuse_overwrite(out, args.overwrite)
    if refusal:
        return fail(refusal)
    try:
        if fmt == "torchscript":
            diff = export_checkpoint(args.checkpoint, out, args.parity_size)
            report = f"parity max |eager - scripted| = {diff:.2e}"
        else:
            report = export_gis(args.checkpoint, out, fmt, args.tile_size,
                                args.tile_overlap, args.resolution)
    except CheckpointError as exc:
        return fail(str(exc))
    except (ParityError, OnnxParityError) as exc:
        return fail(str(exc), 1)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB); {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
