"""Export a trained GeoSeg network as ONNX with the metadata QGIS's Deepness plugin reads.

The ONNX graph takes float32 (N, 3, T, T) RGB in [0, 1] (N dynamic, T the tile side fixed at
export: Deepness needs square tiles of one size) and returns (N, K, T, T) class probabilities
(softmax inside: Deepness thresholds the raw output before its argmax). The input is clipped to
[0, 1] and rounded to 8-bit levels first, and GeoSeg's ImageNet normalisation is inside the
graph, so that Deepness's own preprocessing, ``uint8 / 255`` then
``(x - standardization_mean) / standardization_std``, gives exactly GeoSeg's input:

* 8-bit rasters: ``standardization_mean`` 0 and ``standardization_std`` 1 per band.
* rasters that are not 8-bit, with a per-band scaling (``handler.scaling``: ``low`` shown as 0,
  ``high`` as 255): Deepness divides every raster by 255, so ``mean = low / 255`` and
  ``std = (high - low) / 255`` give ``(raw - low) / (high - low)``, and the clip and rounding
  inside the graph give GeoSeg's 8-bit values. What Deepness cannot do: GeoSeg maps no-data
  pixels to class 255 (and scales non-finite values as ``low``); Deepness classifies them.

Metadata keys (every value JSON-encoded, as Deepness parses them): ``model_type``,
``class_names``, ``resolution`` (cm per pixel, when known), ``tile_size`` and ``tiles_size``
(the docs and the code disagree; both are written), ``tiles_overlap`` (%),
``standardization_mean`` / ``standardization_std``, ``seg_thresh`` (0: the argmax decides),
``seg_small_segment`` (0), and :data:`GEOSEG_KEY` holding GeoSeg's own record (the class table
with colours, band scaling, tile and overlap in pixels).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from model.artifact import BAND_SCALING, TRAIN_TILE_SIZE
from model.builder import NormalizedSegmenter, without_aux_head
from model.class_table import ClassTable

GEOSEG_KEY = "geoseg"
ONNX_FORMAT = "geoseg-onnx/1"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
OPSET = 18
PARITY_AGREEMENT = 0.999
"""Least share of pixels whose argmax must agree between onnxruntime and PyTorch at export."""


class OnnxParityError(RuntimeError):
    """onnxruntime's answer differs from PyTorch's more than :data:`PARITY_AGREEMENT` allows."""


class ProbabilityNetwork(nn.Module):
    """(N, 3, H, W) float32 RGB -> (N, K, H, W) class probabilities. The input is clipped to
    [0, 1] and rounded to 8-bit levels first (``round(x * 255) / 255``), as GeoSeg's own band
    scaling rounds: an 8-bit input passes unchanged, any other lands on GeoSeg's values."""

    def __init__(self, model: NormalizedSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        levels = torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
        return self.model(levels)["out"].softmax(1)


@dataclass(frozen=True)
class TilingHint:
    """How a GIS plugin should tile a raster for this model: ``tile`` and ``overlap`` in pixels
    (GeoSeg's handler defaults unless given), ``resolution_cm`` the ground sample distance the
    model was trained at (cm per pixel; None when unknown)."""

    tile: int
    overlap: int
    resolution_cm: Optional[float] = None

    @property
    def overlap_percent(self) -> int:
        return int(round(100 * self.overlap / self.tile))


def deepness_metadata(table: ClassTable, hint: TilingHint, band_scaling: Optional[dict[str, Any]],
                      geoseg: dict[str, Any]) -> dict[str, str]:
    """The ONNX ``metadata_props`` (key -> JSON text) that Deepness reads, plus GeoSeg's own."""
    if band_scaling:
        low = [float(v) for v in band_scaling["low"]][:3]
        high = [float(v) for v in band_scaling["high"]][:3]
        mean = [lo / 255.0 for lo in low]
        std = [(hi - lo) / 255.0 for lo, hi in zip(low, high)]
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    values: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(table.names)},
        "tile_size": hint.tile, "tiles_size": hint.tile,
        "tiles_overlap": hint.overlap_percent,
        "standardization_mean": mean, "standardization_std": std,
        "seg_thresh": 0.0, "seg_small_segment": 0,
        GEOSEG_KEY: geoseg,
    }
    if hint.resolution_cm is not None:
        values["resolution"] = hint.resolution_cm
    return {key: json.dumps(value) for key, value in values.items()}


def training_resolution_cm(config: dict[str, Any]) -> Optional[float]:
    """Ground resolution in cm per pixel of a run's first training raster (``config["images"]``
    of a point-layer run), when it can be read and its CRS counts in metres; else None."""
    images = config.get("images") or []
    if not images:
        return None
    import rasterio

    try:
        with rasterio.open(images[0]) as src:
            crs = src.crs
            if crs is None or not crs.is_projected or abs(crs.linear_units_factor[1] - 1) > 1e-9:
                return None
            return float(round(100 * abs(src.res[0]), 4))
    except (rasterio.errors.RasterioError, OSError):
        return None


def geoseg_record(table: ClassTable, arch: str, hint: TilingHint,
                  band_scaling: Optional[dict[str, Any]], train_tile: Optional[int]) -> dict[str, Any]:
    """GeoSeg's record inside the ONNX file: enough for ``geoseg predict --model x.onnx``."""
    return {"format": ONNX_FORMAT, "arch": arch, "classes": table.to_dict(),
            "input": {"channels": "RGB", "layout": "NCHW", "dtype": "float32",
                      "range": [0.0, 1.0], "tile": hint.tile},
            "output": {"name": OUTPUT_NAME, "shape": "N, C, H, W", "kind": "probabilities"},
            "tile_size": hint.tile, "tile_overlap": hint.overlap,
            BAND_SCALING: band_scaling, TRAIN_TILE_SIZE: train_tile}


def to_onnx(model: NormalizedSegmenter, tile: int, path: str | Path,
            metadata: dict[str, str]) -> None:
    """Write ``model`` (without its auxiliary head) as ONNX taking (N, 3, tile, tile), N dynamic,
    with ``metadata`` (key -> JSON text) as the file's ``metadata_props``."""
    wrapped = ProbabilityNetwork(without_aux_head(model)).eval()
    example = torch.rand(2, 3, tile, tile)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on naming and deprecations
        program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), optimize=True, verbose=False)
    assert program is not None
    program.model.metadata_props.update(metadata)
    program.model.producer_name = "geoseg"
    program.save(str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ONNX file's ``metadata_props`` decoded from JSON (onnx library)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}


@dataclass(frozen=True)
class OnnxParity:
    """onnxruntime against PyTorch on the same tiles: share of pixels with the same argmax and
    the largest absolute probability difference."""

    agreement: float
    max_probability_difference: float
    tiles: int


def onnx_parity(model: NormalizedSegmenter, path: str | Path, tiles: np.ndarray) -> OnnxParity:
    """Compare ``path`` run by onnxruntime (CPU) with ``model`` in PyTorch on ``tiles``
    ((N, 3, T, T) float32 in [0, 1])."""
    from model.onnx_runtime import cpu_session

    session = cpu_session(path)
    wrapped = ProbabilityNetwork(without_aux_head(model)).eval()
    with torch.inference_mode():
        reference = wrapped(torch.from_numpy(tiles)).numpy()
    answer = session.run([OUTPUT_NAME], {INPUT_NAME: tiles})[0]
    agreement = float((reference.argmax(1) == answer.argmax(1)).mean())
    return OnnxParity(agreement, float(np.abs(reference - answer).max()), len(tiles))


def parity_tiles(tile: int, count: int = 2, seed: int = 0) -> np.ndarray:
    """(count, 3, tile, tile) float32 test tiles with structure (smooth fields and edges), so
    the network's answer is not one class everywhere: random per-pixel noise is not a scene."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 3, 8, 8)).astype(np.float32)
    tiles = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(tile, tile),
                                            mode="bilinear", align_corners=False).numpy()
    tiles += rng.normal(0.0, 0.05, tiles.shape).astype(np.float32)
    return np.clip(tiles, 0.0, 1.0).astype(np.float32)


def export_onnx(model: NormalizedSegmenter, table: ClassTable, arch: str, out: str | Path,
                hint: TilingHint, band_scaling: Optional[dict[str, Any]] = None,
                train_tile: Optional[int] = None, parity_count: int = 2) -> OnnxParity:
    """Write ``out`` (graph and metadata) and check it against PyTorch on ``parity_count``
    tiles; raises OnnxParityError below :data:`PARITY_AGREEMENT` (the file is removed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = geoseg_record(table, arch, hint, band_scaling, train_tile)
    to_onnx(model, hint.tile, out, deepness_metadata(table, hint, band_scaling, record))
    parity = onnx_parity(model, out, parity_tiles(hint.tile, parity_count))
    if parity.agreement < PARITY_AGREEMENT:
        out.unlink()
        raise OnnxParityError(f"onnxruntime agrees with PyTorch on {parity.agreement:.4%} of "
                              f"pixels, below {PARITY_AGREEMENT:.1%}")
    return parity
