"""Overlapping tiles in, one class map out: each tile writes only its centre.

Along each axis, tiles of side ``tile`` start every ``tile - overlap`` pixels, the last one
flush with the image's end. Neighbouring tiles split their shared strip at its middle, so each
output pixel comes from the tile in which it lies furthest from a border (at least
``overlap / 2`` pixels inside, except at the image's own edges): no seams, and memory stays
one uint8 class map plus one micro-batch of tiles. Images smaller than a tile are padded
(reflected) up to one tile; the output is cropped back, so its size equals the input's exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

TilePredictor = Callable[[np.ndarray], np.ndarray]
"""(B, tile, tile, 3) uint8 RGB -> (B, tile, tile) uint8 class ids."""


@dataclass(frozen=True)
class Tile:
    """A tile at (``y``, ``x``) of the padded image; it writes rows ``keep_y`` and columns
    ``keep_x`` (half-open, image coordinates) of the output."""

    y: int
    x: int
    keep_y: tuple[int, int]
    keep_x: tuple[int, int]


def axis_spans(length: int, tile: int, overlap: int) -> list[tuple[int, tuple[int, int]]]:
    """(start, (keep_from, keep_to)) of the tiles along one axis of ``length`` pixels."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile (got {tile}, {overlap})")
    if length <= tile:
        return [(0, (0, length))]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] \
        + [length]
    return [(s, (bounds[i], bounds[i + 1])) for i, s in enumerate(starts)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Every tile of a ``height`` x ``width`` image, row by row."""
    return [Tile(y, x, ky, kx)
            for y, ky in axis_spans(height, tile, overlap)
            for x, kx in axis_spans(width, tile, overlap)]


def pad_to_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    """Pad (H, W, C) at the bottom / right to at least (tile, tile) by reflection."""
    h, w = rgb.shape[:2]
    ph, pw = max(0, tile - h), max(0, tile - w)
    if not ph and not pw:
        return rgb
    if min(h, w) > 1:
        return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")


def cut(padded: np.ndarray, t: Tile, tile: int) -> np.ndarray:
    """The (tile, tile, C) pixels of tile ``t``."""
    return padded[t.y:t.y + tile, t.x:t.x + tile]


def paste(out: np.ndarray, t: Tile, classes: np.ndarray) -> None:
    """Write the kept centre of a (tile, tile) class tile into ``out`` (H, W)."""
    (y0, y1), (x0, x1) = t.keep_y, t.keep_x
    out[y0:y1, x0:x1] = classes[y0 - t.y:y1 - t.y, x0 - t.x:x1 - t.x]


def segment_images(images: Sequence[np.ndarray], predict: TilePredictor, tile: int,
                   overlap: int, micro_batch: int) -> list[np.ndarray]:
    """Class maps (H, W) uint8 for several RGB images (H, W, 3) uint8 at once.

    The tiles of all images are pooled and sent to ``predict`` in micro-batches of exactly
    ``micro_batch`` tiles (the last one padded with blank tiles whose answers are dropped), so
    requests batched together share the device's batches, and the network always runs at one
    shape: kernels chosen for another batch size could flip a near-tie argmax, and an image's
    answer would then depend on its companions.
    """
    padded = [pad_to_tile(img, tile) for img in images]
    outputs = [np.zeros(img.shape[:2], dtype=np.uint8) for img in images]
    jobs = [(k, t) for k, img in enumerate(images)
            for t in plan_tiles(img.shape[0], img.shape[1], tile, overlap)]
    for chunk in _chunks(jobs, max(1, micro_batch)):
        batch = np.zeros((max(1, micro_batch), tile, tile, 3), dtype=np.uint8)
        for slot, (k, t) in enumerate(chunk):
            batch[slot] = cut(padded[k], t, tile)
        classes = predict(batch)
        for (k, t), c in zip(chunk, classes):
            paste(outputs[k], t, c)
    return outputs


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
