"""GeoSeg's own TorchServe metrics, recorded through ``context.metrics`` (TorchServe 0.12).

Counters (each carries the dimensions ``ModelName`` and ``Level`` like TorchServe's own
``HandlerTime``; the error counter also ``Kind``):

- :data:`TILES` (``GeoSegTiles``): model tiles run for the requests whose image decoded
  (``tile_size`` squares, an image smaller than a tile counts one).
- :data:`MEGAPIXELS` (``GeoSegMegapixels``): input pixels of those requests, in millions
  (width x height of the decoded image, before padding).
- :data:`REQUEST_ERRORS` (``GeoSegRequestErrors``): requests answered with a 4xx JSON error,
  dimension ``Kind`` = the error's ``detail.kind`` (``corrupt``, ``too_many_pixels``, ...).
- :data:`STAGE_MS` (``GeoSegStageMilliseconds``): wall milliseconds the worker spent per stage,
  summed over batches, dimension ``Stage`` = ``decode`` (request parsing and decoding),
  ``model`` (tiling, forward passes, stitching) or ``encode`` (answers and errors). Divided by
  TorchServe's ``ts_inference_requests_total`` they give each stage's cost per request.

TorchServe forwards them to its metrics endpoint only when they are declared in its metrics
config or ``model_metrics_auto_detect=true`` (set in ``config.properties``); with
``metrics_mode=prometheus`` they are read at ``http://127.0.0.1:8082/metrics``. See
docs/metrics.md.

The functions take any object with TorchServe's ``add_counter(name, value, idx, dimensions)``
and ``add_metric(name, value, unit, idx, dimensions, metric_type)``, so tests can pass a
recorder.
"""
from __future__ import annotations

from typing import Any, Optional

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes

TILES = "GeoSegTiles"
MEGAPIXELS = "GeoSegMegapixels"
REQUEST_ERRORS = "GeoSegRequestErrors"
STAGE_MS = "GeoSegStageMilliseconds"
STAGES = ("decode", "model", "encode")
UNKNOWN_KIND = "unknown"


def _dimensions(model_name: Optional[str], **extra: str) -> list[Dimension]:
    """Always the same names in the same order: TorchServe fixes a metric's dimension names
    at its first use, and a fresh list avoids its shared mutable default argument."""
    return [Dimension(name, value) for name, value in extra.items()] + [
        Dimension("ModelName", model_name or "geoseg"), Dimension("Level", "Model")]


def record_image(metrics: Any, model_name: Optional[str], idx: int, tiles: int,
                 pixels: int) -> None:
    """Count one answered request: ``tiles`` model tiles, ``pixels`` input pixels."""
    metrics.add_counter(TILES, tiles, idx, _dimensions(model_name))
    metrics.add_metric(MEGAPIXELS, round(pixels / 1e6, 6), "Megapixels", idx,
                       _dimensions(model_name), MetricTypes.COUNTER)


def record_stage(metrics: Any, model_name: Optional[str], stage: str, milliseconds: float) -> None:
    """Add one batch's ``milliseconds`` in ``stage`` (one of :data:`STAGES`)."""
    metrics.add_metric(STAGE_MS, round(milliseconds, 3), "ms", None,
                       _dimensions(model_name, Stage=stage), MetricTypes.COUNTER)


def record_error(metrics: Any, model_name: Optional[str], idx: int, kind: Optional[str]) -> None:
    """Count one request refused with a 4xx, by its ``detail.kind``."""
    metrics.add_counter(REQUEST_ERRORS, 1, idx, _dimensions(model_name, Kind=kind or UNKNOWN_KIND))
