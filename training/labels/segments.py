"""Class probabilities averaged within image segments: a pixel's label follows its region.

A per-pixel classifier (the forest on filter features) labels each pixel alone, so its maps are
speckled: a roof gets a few "road" pixels, a sand patch a few "building" ones. Averaging the
probabilities within the segments of Felzenszwalb and Huttenlocher's graph-based segmentation
(``skimage.segmentation.felzenszwalb``: regions of similar colour, boundaries where the colour
changes) gives each region one answer, its pixels' mean belief, and keeps the boundaries the
photo has.

Settings chosen on dubai-aerial tiles 1-4 only (the forest fitted on tiles 1-2 and scored on
tiles 3-4, and on tiles 3-4's own points; scale 0.5, 10 points per class and photo, seed 0):
scale 100 raised the forest's mIoU there by 0.4 and 2.6 points, scales of 300 and above lowered
it (docs/results.md, "Forest labels averaged within segments").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentSettings:
    """Arguments of ``skimage.segmentation.felzenszwalb`` (``scale``: larger gives larger
    regions; ``sigma``: Gaussian pre-smoothing in pixels; ``min_size``: least region in pixels,
    all of the image as read, i.e. after ``--scale``)."""

    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 50


def image_segments(image: np.ndarray, settings: SegmentSettings = SegmentSettings()) -> np.ndarray:
    """Region ids 0..R-1 of ``image`` (H, W, 3) uint8 RGB: (H, W) int64."""
    from skimage.segmentation import felzenszwalb

    return felzenszwalb(image, scale=settings.scale, sigma=settings.sigma,
                        min_size=settings.min_size, channel_axis=-1).astype(np.int64, copy=False)


def segment_mean(probs: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """``probs`` (K, H, W) float with every pixel's column replaced by the mean over its region
    of ``segments`` (H, W) int ids >= 0: (K, H, W) float32."""
    if probs.shape[1:] != segments.shape:
        raise ValueError(f"probabilities {probs.shape[1:]} and segments {segments.shape} differ in size")
    flat = segments.ravel()
    regions = int(flat.max()) + 1 if flat.size else 0
    sizes = np.maximum(np.bincount(flat, minlength=regions), 1)
    out = np.empty(probs.shape, np.float32)
    for k in range(probs.shape[0]):
        means = np.bincount(flat, weights=probs[k].ravel(), minlength=regions) / sizes
        out[k] = means[flat].reshape(segments.shape)
    return out


def region_blend(probs: np.ndarray, segments: np.ndarray | Sequence[np.ndarray],
                 weight: float) -> np.ndarray:
    """(1 - ``weight``) x ``probs`` (K, H, W) + ``weight`` x their :func:`segment_mean` over
    ``segments`` (H, W), or the mean of those over several segmentations: (K, H, W) float32.
    0 leaves each pixel its own answer, 1 gives every region one answer; in between a region's
    mean decides where its pixels are unsure."""
    if weight <= 0:
        return probs.astype(np.float32, copy=False)
    layers = [segments] if isinstance(segments, np.ndarray) else list(segments)
    means = segment_mean(probs, layers[0])
    for layer in layers[1:]:
        means += segment_mean(probs, layer)
    if len(layers) > 1:
        means /= len(layers)
    if weight >= 1:
        return means
    return ((1 - weight) * probs + weight * means).astype(np.float32, copy=False)
