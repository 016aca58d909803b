"""One rule for turning raster bands that are not 8-bit into the network's 0..255 input.

A model trained on rasters that are not 8-bit carries per-band statistics (:class:`BandScaling`,
the ``band_scaling`` entry of its metadata, measured on the training rasters): band ``k`` maps
``low[k]`` to 0 and ``high[k]`` to 255, linearly, clipped. Training, the handler and
``geoseg predict`` all use it, so a pixel gets the same value however the scene is cut.
A model exported without statistics falls back to a stretch of each band from its own 2nd to
98th percentile over the valid pixels of what was read: one request, or one scene for
``geoseg predict`` (documented fallback; pieces of one scene then differ).
8-bit bands are used as they are.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class BandScaling:
    """Per band, the raw values shown as 0 (``low``) and as 255 (``high``)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not self.low:
            raise ValueError("band scaling needs one low and one high value per band")

    @classmethod
    def from_meta(cls, meta: Optional[Mapping[str, Any]]) -> Optional[BandScaling]:
        """The scaling in a model's metadata (``{"low": [...], "high": [...]}``), or None."""
        if not meta:
            return None
        return cls(tuple(float(v) for v in meta["low"]), tuple(float(v) for v in meta["high"]))

    def to_meta(self) -> dict[str, list[float]]:
        return {"low": list(self.low), "high": list(self.high)}

    def for_bands(self, count: int) -> BandScaling:
        """The first ``count`` bands' statistics (a grey raster uses band 1's)."""
        if count > len(self.low):
            raise ValueError(f"the model's band statistics cover {len(self.low)} bands, "
                             f"the raster has {count}")
        return BandScaling(self.low[:count], self.high[:count])


def percentile_scaling(bands: np.ndarray, valid: Optional[np.ndarray] = None) -> BandScaling:
    """The fallback: each band of (B, H, W) from its 2nd to 98th percentile over the finite
    pixels where ``valid`` (H, W) bool is set (all pixels when None)."""
    low, high = [], []
    for band in bands.astype(np.float64):
        keep = np.isfinite(band) if valid is None else np.isfinite(band) & valid
        if not keep.any():
            low.append(0.0)
            high.append(1.0)
            continue
        lo, hi = np.percentile(band[keep], STRETCH_PERCENTILES)
        low.append(float(lo))
        high.append(float(hi) if hi > lo else float(lo) + 1.0)
    return BandScaling(tuple(low), tuple(high))


def to_uint8(bands: np.ndarray, scaling: Optional[BandScaling] = None,
             valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(B, H, W) any numeric dtype -> uint8: as is for uint8, else scaled by ``scaling`` (or
    by :func:`percentile_scaling` of these pixels when None). Non-finite pixels become 0."""
    if bands.dtype == np.uint8:
        return bands
    rule = scaling.for_bands(bands.shape[0]) if scaling else percentile_scaling(bands, valid)
    out = np.zeros(bands.shape, dtype=np.uint8)
    for k, band in enumerate(bands.astype(np.float64)):
        lo, hi = rule.low[k], rule.high[k]
        span = hi - lo if hi > lo else 1.0
        finite = np.isfinite(band)
        scaled = np.clip((np.where(finite, band, lo) - lo) / span * 255.0, 0, 255)
        out[k] = np.round(scaled).astype(np.uint8)
    return out
