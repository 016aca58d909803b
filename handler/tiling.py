"""Overlapping tiles in, one class map out: each tile writes only its centre.

Along each axis, tiles of side ``tile`` start every ``tile - overlap`` pixels, the last one
flush with the end. Neighbouring tiles split their shared strip at its middle, so each output
pixel comes from the tile in which it lies furthest from a border: no seams, and memory stays
one uint8 class map plus one micro-batch of tiles.

Scene edges get context too: the image is extended by ``margin`` pixels (default
:func:`edge_margin`, half the overlap) on every side by reflection, and the grid covers that
extended image, so a pixel on the image's own border lies at least ``margin`` pixels inside its
tile instead of next to the network's zero padding. An image that fits in one tile keeps the
cost of one tile: its margin shrinks to the room that tile has (a 512 x 512 request at tile 512
gets none). Images smaller than a tile are also reflected up to one tile at the bottom / right;
the output always has the input's size exactly.

Tile origins are in image coordinates and may be negative or reach past the image: the pixels
there are reflections (:func:`reflect_index`). :func:`read_window` cuts any such window from an
in-memory image; ``scene/`` reads the same windows from rasters on disk, so a scene mapped in
windows equals one request's answer.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

TilePredictor = Callable[[np.ndarray], np.ndarray]
"""(B, tile, tile, 3) uint8 RGB -> (B, tile, tile) uint8 class ids."""


@dataclass(frozen=True)
class Tile:
    """A tile whose top-left pixel is (``y``, ``x``) in image coordinates (negative or beyond
    the image where it reaches into the reflected margin); it writes rows ``keep_y`` and
    columns ``keep_x`` (half-open, image coordinates) of the output."""

    y: int
    x: int
    keep_y: tuple[int, int]
    keep_x: tuple[int, int]


Span = tuple[int, tuple[int, int]]
"""(tile start, (keep_from, keep_to)) along one axis, image coordinates."""


def edge_margin(overlap: int) -> int:
    """Default context reflected around the image: half the overlap, in pixels."""
    return overlap // 2


def axis_spans(length: int, tile: int, overlap: int, margin: Optional[int] = None) -> list[Span]:
    """The tiles along one axis of ``length`` pixels with ``margin`` reflected pixels added at
    both ends (None: :func:`edge_margin`); see the module docstring."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile (got {tile}, {overlap})")
    margin = edge_margin(overlap) if margin is None else margin
    if margin < 0 or 2 * margin >= tile:
        raise ValueError(f"need 0 <= margin < tile / 2 (got {margin} for tile {tile})")
    if length <= tile:
        start = -min(margin, (tile - length) // 2)
        return [(start, (0, length))]
    extent = length + 2 * margin
    stride = tile - overlap
    starts = list(range(0, extent - tile, stride)) + [extent - tile]
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] \
        + [extent]
    spans = [(s - margin, (max(0, bounds[i] - margin), min(length, bounds[i + 1] - margin)))
             for i, s in enumerate(starts)]
    return [(s, (a, b)) for s, (a, b) in spans if a < b]


def plan_tiles(height: int, width: int, tile: int, overlap: int,
               margin: Optional[int] = None) -> list[Tile]:
    """Every tile of a ``height`` x ``width`` image, row by row (``margin``: as in
    :func:`axis_spans`)."""
    return [Tile(y, x, ky, kx)
            for y, ky in axis_spans(height, tile, overlap, margin)
            for x, kx in axis_spans(width, tile, overlap, margin)]


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` pixels for any integer positions: mirrored at the
    ends without repeating the edge pixel (numpy's ``reflect`` padding), repeated as often as
    needed; an axis of one pixel repeats it."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.abs(index) % period
    return np.where(folded >= length, period - folded, folded)


def read_window(image: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows ``y0:y1`` and columns ``x0:x1`` of ``image`` (H, W, ...) extended by reflection;
    a view when the window lies inside the image."""
    h, w = image.shape[:2]
    if 0 <= y0 and y1 <= h and 0 <= x0 and x1 <= w:
        return image[y0:y1, x0:x1]
    rows = reflect_index(np.arange(y0, y1), h)
    cols = reflect_index(np.arange(x0, x1), w)
    return image[rows[:, None], cols[None, :]]


def cut(image: np.ndarray, t: Tile, tile: int) -> np.ndarray:
    """The (tile, tile, C) pixels of tile ``t`` of ``image`` (H, W, C)."""
    return read_window(image, t.y, t.y + tile, t.x, t.x + tile)


def paste(out: np.ndarray, t: Tile, classes: np.ndarray) -> None:
    """Write the kept centre of a (tile, tile) class tile into ``out`` (H, W)."""
    (y0, y1), (x0, x1) = t.keep_y, t.keep_x
    out[y0:y1, x0:x1] = classes[y0 - t.y:y1 - t.y, x0 - t.x:x1 - t.x]


def segment_images(images: Sequence[np.ndarray], predict: TilePredictor, tile: int,
                   overlap: int, micro_batch: int,
                   margins: Optional[Sequence[Optional[int]]] = None) -> list[np.ndarray]:
    """Class maps (H, W) uint8 for several RGB images (H, W, 3) uint8 at once.

    ``margins``: per image, the context reflected at its borders (None: :func:`edge_margin`;
    0 for a window that already carries its context, as ``geoseg predict --server`` sends).
    The tiles of all images are pooled and sent to ``predict`` in micro-batches of exactly
    ``micro_batch`` tiles (the last one padded with blank tiles whose answers are dropped), so
    requests batched together share the device's batches, and the network always runs at one
    shape: kernels chosen for another batch size could flip a near-tie argmax, and an image's
    answer would then depend on its companions.
    """
    margins = list(margins) if margins is not None else [None] * len(images)
    outputs = [np.zeros(img.shape[:2], dtype=np.uint8) for img in images]
    jobs = [(k, t) for k, img in enumerate(images)
            for t in plan_tiles(img.shape[0], img.shape[1], tile, overlap, margins[k])]
    for chunk in _chunks(jobs, max(1, micro_batch)):
        batch = np.zeros((max(1, micro_batch), tile, tile, 3), dtype=np.uint8)
        for slot, (k, t) in enumerate(chunk):
            batch[slot] = cut(images[k], t, tile)
        classes = predict(batch)
        for (k, t), c in zip(chunk, classes):
            paste(outputs[k], t, c)
    return outputs


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
