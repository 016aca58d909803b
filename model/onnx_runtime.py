"""Run a GeoSeg ONNX export with onnxruntime: the tile predictor ``geoseg predict`` uses for
``--model model.onnx``, with the same contract as ``handler.inference.tile_predictor``:
(B, T, T, 3) uint8 tiles in, (B, T, T) uint8 class ids or (B, K, T, T) float32 probabilities out.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from model.artifact import BAND_SCALING
from model.class_table import ClassTable, ClassTableError
from model.onnx_export import GEOSEG_KEY, INPUT_NAME, OUTPUT_NAME


class OnnxModelError(ValueError):
    """An ONNX file that is not a GeoSeg export, or that onnxruntime cannot load."""


def cpu_session(path: str | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session on ``path`` (``threads`` 0: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no notes on the terminal
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class OnnxModel:
    """A loaded GeoSeg ONNX export: its session, class table, tile side and GeoSeg record."""

    session: Any
    classes: ClassTable
    tile: int
    meta: dict[str, Any]

    @property
    def band_scaling(self) -> Optional[dict[str, Any]]:
        value = self.meta.get(BAND_SCALING)
        return dict(value) if value else None


def load_onnx_model(path: str | Path) -> OnnxModel:
    """Load ``path`` into an onnxruntime session (metadata read from that session: the file is
    parsed once); OnnxModelError (one line) when it is not a GeoSeg ONNX export."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    try:
        session = cpu_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail, ... by case
        raise OnnxModelError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from exc
    text = session.get_modelmeta().custom_metadata_map.get(GEOSEG_KEY)
    if text is None:
        raise OnnxModelError(f"{path}: ONNX file without GeoSeg's '{GEOSEG_KEY}' metadata; "
                             "export it with `geoseg export --format onnx`")
    try:
        meta = json.loads(text)
        classes = ClassTable.from_dict(meta["classes"])
        tile = int(meta["tile_size"])
    except (KeyError, TypeError, ValueError, ClassTableError) as exc:
        raise OnnxModelError(f"{path}: unreadable GeoSeg metadata ({exc})") from exc
    return OnnxModel(session, classes, tile, meta)


def onnx_tile_predictor(session: Any, scores: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """(B, T, T, 3) uint8 -> (B, T, T) uint8 ids, or with ``scores`` (B, K, T, T) float32
    probabilities; the graph's input is float32 in [0, 1], as ``tile_predictor`` feeds TorchScript."""

    def predict(batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        x /= np.float32(255.0)
        probabilities = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if scores:
            return probabilities
        return probabilities.argmax(1).astype(np.uint8)

    return predict
