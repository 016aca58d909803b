"""Overlapping tiles in, one class map out, without seams.

Along each axis, tiles of side ``tile`` start every ``tile - overlap`` pixels on a regular
grid; the last one may reach past the image's end into reflected pixels, so every pair of
neighbours overlaps by exactly ``overlap`` pixels and no pixel lies in more than two tiles per
axis (``overlap`` at most half the tile).

Two ways to join the tiles, chosen by what the predictor returns:

* class scores (B, K, tile, tile), the default (``HandlerConfig.tile_blend = "taper"``): each
  tile's scores are weighted by a cosine taper that falls from 1 to 0 across each overlap strip
  it shares with a neighbour (its neighbour's weight rises by as much), summed, and the argmax
  of the sum is the class. Two tiles that disagree hand over gradually, so no straight line
  appears where one tile's share ends (docs/predict.md measures the seam index);
* class ids (B, tile, tile): each tile writes only its centre, neighbours splitting their
  shared strip at its middle (the hard split, cheaper, with visible seams where tiles
  disagree).

Memory stays O(pixels): a class map plus, while blending, the scores of one row of tiles.

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
import torch

TilePredictor = Callable[[np.ndarray], np.ndarray]
"""(B, tile, tile, 3) uint8 RGB -> (B, K, tile, tile) float32 class scores (blended with a
taper) or (B, tile, tile) uint8 class ids (hard split between tiles)."""

BLENDS = ("taper", "centre")
"""How tiles are joined: scores blended with a cosine taper, or class ids split at the middle of
each overlap strip."""


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
    both ends (None: :func:`edge_margin`); see the module docstring. Each span's keep range is
    its share under the hard split (the middles of its overlap strips)."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile (got {tile}, {overlap})")
    if 2 * overlap > tile:
        raise ValueError(f"need overlap <= tile / 2 (got {overlap} for tile {tile})")
    margin = edge_margin(overlap) if margin is None else margin
    if margin < 0 or 2 * margin >= tile:
        raise ValueError(f"need 0 <= margin < tile / 2 (got {margin} for tile {tile})")
    if length <= tile:
        start = -min(margin, (tile - length) // 2)
        return [(start, (0, length))]
    stride = tile - overlap
    count = -(-(length + 2 * margin - tile) // stride) + 1
    starts = [k * stride - margin for k in range(count)]
    bounds = [0] + [s + overlap // 2 for s in starts[1:]] + [length]
    spans = [(s, (bounds[i], min(length, bounds[i + 1]))) for i, s in enumerate(starts)]
    return [(s, (a, b)) for s, (a, b) in spans if a < b]


def taper_weights(spans: Sequence[Span], tile: int) -> list[np.ndarray]:
    """Per span of :func:`axis_spans`, its (tile,) float32 weights along the axis: 1, except
    across each strip shared with a neighbour, where it falls from 1 to 0 as the neighbour's
    rises from 0 to 1 (cos^2 / sin^2 of the position in the strip, so the two sum to 1; a tile's
    own edge pixel gets weight 0)."""
    weights = []
    for i, (start, _) in enumerate(spans):
        w = np.ones(tile, dtype=np.float64)
        if i > 0:
            shared = spans[i - 1][0] + tile - start
            w[:shared] *= _rising(shared)
        if i + 1 < len(spans):
            shared = start + tile - spans[i + 1][0]
            w[tile - shared:] *= 1.0 - _rising(shared)
        weights.append(w.astype(np.float32))
    return weights


def _rising(n: int) -> np.ndarray:
    """sin^2 over the (n,) pixels of a strip: exactly 0 on its first pixel (the rising tile's
    own edge, next to its zero padding) and exactly 1 on its last."""
    if n == 1:
        return np.array([0.5])
    return np.sin(0.5 * np.pi * np.arange(n) / (n - 1)) ** 2


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
    return image.take(rows, axis=0).take(cols, axis=1)  # 3.5x faster than one 2-D fancy index


def first_max_class(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(1)`` of (B, K, H, W) scores as (B, H, W) uint8 (K <= 256), on their
    device, the first class winning ties (as ``torch.argmax`` and numpy). One pass per class,
    branch-free: class k only ever replaces a smaller id, so where it beats the best score so
    far the id becomes ``max(ids, k)``, elsewhere ``max(ids, 0)``. On the CPU (5 x 512 x 512,
    one thread) 0.7 ms against 3.4-4.5 with a ``masked_fill_`` per class and about 20 with
    torch's reduction over the class axis. Scores must not be NaN."""
    best = scores[:, 0].clone()
    ids = torch.zeros(best.shape, dtype=torch.uint8, device=scores.device)
    beats = torch.empty(best.shape, dtype=torch.bool, device=scores.device)
    candidate = torch.empty_like(ids)
    for k in range(1, scores.shape[1]):
        torch.gt(scores[:, k], best, out=beats)
        torch.mul(beats.view(torch.uint8), k, out=candidate)   # k where class k beats, else 0
        torch.maximum(ids, candidate, out=ids)
        torch.maximum(best, scores[:, k], out=best)
    return ids


def class_ids(scores: np.ndarray) -> np.ndarray:
    """:func:`first_max_class` of (K, H, W) host scores: (H, W) uint8, the first class winning
    ties (about twice as fast as numpy's strided ``argmax(0)``)."""
    return first_max_class(torch.from_numpy(scores)[None])[0].numpy()


def cut(image: np.ndarray, t: Tile, tile: int) -> np.ndarray:
    """The (tile, tile, C) pixels of tile ``t`` of ``image`` (H, W, C)."""
    return read_window(image, t.y, t.y + tile, t.x, t.x + tile)


def paste(out: np.ndarray, t: Tile, classes: np.ndarray) -> None:
    """Write the kept centre of a (tile, tile) class tile into ``out`` (H, W)."""
    (y0, y1), (x0, x1) = t.keep_y, t.keep_x
    out[y0:y1, x0:x1] = classes[y0 - t.y:y1 - t.y, x0 - t.x:x1 - t.x]


class _Stitcher:
    """One image's class map, assembled from its tiles in plan order (row by row).

    Class-id tiles write their kept centres. Score tiles are weighted by their taper and summed
    into the scores of the current row of tiles, (K, band, W) float32; when the next row starts,
    the rows above it can no longer change and are turned into class ids."""

    def __init__(self, height: int, width: int, tile: int, overlap: int,
                 margin: Optional[int], keep_scores: bool = False) -> None:
        self.out = np.zeros((height, width), dtype=np.uint8)
        self.kept: Optional[np.ndarray] = None   # (K, H, W) blended scores when keep_scores
        self.keep_scores = keep_scores
        self.tile = tile
        self.rows = axis_spans(height, tile, overlap, margin)
        self.cols = axis_spans(width, tile, overlap, margin)
        self.row_weights = taper_weights(self.rows, tile)
        self.col_weights = taper_weights(self.cols, tile)
        self.scores: Optional[np.ndarray] = None   # (K, band rows, W), from image row band_y0
        self.band_y0 = 0
        self.row = -1

    def tiles(self) -> list[tuple[int, int, Tile]]:
        """(row index, column index, tile) of every tile, in plan order."""
        return [(r, c, Tile(y, x, ky, kx)) for r, (y, ky) in enumerate(self.rows)
                for c, (x, kx) in enumerate(self.cols)]

    def add(self, r: int, c: int, t: Tile, answer: np.ndarray) -> None:
        """Take tile ``t``'s answer: (tile, tile) class ids or (K, tile, tile) scores."""
        if answer.ndim == 2:
            paste(self.out, t, answer)
            return
        if r != self.row:
            self._next_row(r, answer.shape[0])
        assert self.scores is not None
        h, w = self.out.shape
        y0, y1 = max(0, t.y), min(h, t.y + self.tile)
        x0, x1 = max(0, t.x), min(w, t.x + self.tile)
        inside = (slice(y0 - t.y, y1 - t.y), slice(x0 - t.x, x1 - t.x))
        weight = np.outer(self.row_weights[r], self.col_weights[c])[inside]
        part = answer[(slice(None), *inside)]
        if part.flags.writeable:  # in place: the answer is this stitcher's to use up
            np.multiply(part, weight, out=part)
        else:
            part = part * weight
        self.scores[:, y0 - self.band_y0:y1 - self.band_y0, x0:x1] += part

    def _next_row(self, r: int, classes: int) -> None:
        h, w = self.out.shape
        top = max(0, self.rows[r][0])
        bottom = min(h, self.rows[r][0] + self.tile)
        scores = np.zeros((classes, bottom - top, w), dtype=np.float32)
        if self.scores is not None:
            self._finish(top)
            carried = self.scores[:, top - self.band_y0:]
            scores[:, :carried.shape[1]] = carried
        self.scores, self.band_y0, self.row = scores, top, r

    def _finish(self, until: int) -> None:
        """Class ids of the band's rows above ``until`` (image coordinates)."""
        if self.scores is not None and until > self.band_y0:
            rows = self.scores[:, :until - self.band_y0]
            self.out[self.band_y0:until] = class_ids(rows)
            if self.keep_scores:
                if self.kept is None:
                    self.kept = np.zeros((rows.shape[0], *self.out.shape), np.float32)
                self.kept[:, self.band_y0:until] = rows

    def result(self) -> np.ndarray:
        """The (H, W) uint8 class map, once every tile was added."""
        self._finish(self.out.shape[0])
        self.scores = None
        return self.out


def segment_images(images: Sequence[np.ndarray], predict: TilePredictor, tile: int,
                   overlap: int, micro_batch: int,
                   margins: Optional[Sequence[Optional[int]]] = None,
                   lone_ids: Optional[TilePredictor] = None) -> list[np.ndarray]:
    """Class maps (H, W) uint8 for several RGB images (H, W, 3) uint8 at once.

    ``predict`` returns scores (blended) or class ids (hard split): see the module docstring.
    ``margins``: per image, the context reflected at its borders (None: :func:`edge_margin`;
    0 for a window that already carries its context, as ``geoseg predict --server`` sends).
    The tiles of all images are pooled and sent to ``predict`` in micro-batches of exactly
    ``micro_batch`` tiles (the last one padded with blank tiles whose answers are dropped), so
    requests batched together share the device's batches, and the network always runs at one
    shape: kernels chosen for another batch size could flip a near-tie argmax, and an image's
    answer would then depend on its companions.

    ``lone_ids``: for a ``predict`` that returns scores, the same network's (B, tile, tile)
    uint8 class ids, the first maximum of its logits (``handler.inference.lone_tile_predictor``).
    A tile alone in its image has no neighbour to blend with, so its class map is taken from
    its logits on the device: no softmax, B x tile x tile bytes to copy back instead of
    B x K x tile x tile floats, and no blending on the host. Such tiles (single-tile requests)
    go to ``lone_ids`` in micro-batches of their own, whatever they are batched with, so an
    image's answer never depends on its companions; the map is the class of highest
    probability except where two probabilities are equal in float32 but not their logits.
    """
    return [s.result() for s in _stitched(images, predict, tile, overlap, micro_batch, margins,
                                          lone_ids=lone_ids)]


def blended_scores(images: Sequence[np.ndarray], predict: TilePredictor, tile: int,
                   overlap: int, micro_batch: int,
                   margins: Optional[Sequence[Optional[int]]] = None) -> list[np.ndarray]:
    """The blended scores (K, H, W) float32 behind :func:`segment_images`' class maps, for a
    ``predict`` that returns scores: with softmax scores, class probabilities (the taper's
    weights sum to 1 at every pixel), whose argmax is exactly the class map (without
    ``lone_ids``). Holds K floats per pixel: for images, not whole scenes."""
    stitchers = _stitched(images, predict, tile, overlap, micro_batch, margins, keep_scores=True)
    for s in stitchers:
        s.result()
        if s.kept is None:
            raise ValueError("blended_scores needs a predictor that returns scores")
    return [s.kept for s in stitchers if s.kept is not None]


def _stitched(images: Sequence[np.ndarray], predict: TilePredictor, tile: int, overlap: int,
              micro_batch: int, margins: Optional[Sequence[Optional[int]]],
              keep_scores: bool = False, lone_ids: Optional[TilePredictor] = None
              ) -> list[_Stitcher]:
    """Every tile of ``images`` through ``predict`` in micro-batches, added to one stitcher per
    image (see :func:`segment_images`; ``lone_ids`` for micro-batches of lone tiles)."""
    margins = list(margins) if margins is not None else [None] * len(images)
    stitchers = [_Stitcher(img.shape[0], img.shape[1], tile, overlap, margins[k], keep_scores)
                 for k, img in enumerate(images)]
    jobs = [(k, r, c, t) for k, s in enumerate(stitchers) for r, c, t in s.tiles()]
    by_predictor = [(predict, jobs)]
    if lone_ids is not None and not keep_scores:
        lone = {k for k, s in enumerate(stitchers) if len(s.rows) == len(s.cols) == 1}
        by_predictor = [(lone_ids, [j for j in jobs if j[0] in lone]),
                        (predict, [j for j in jobs if j[0] not in lone])]
    for run, its_jobs in by_predictor:
        for chunk in _chunks(its_jobs, max(1, micro_batch)):
            batch = np.zeros((max(1, micro_batch), tile, tile, 3), dtype=np.uint8)
            for slot, (k, _, _, t) in enumerate(chunk):
                batch[slot] = cut(images[k], t, tile)
            for (k, r, c, t), answer in zip(chunk, run(batch)):
                stitchers[k].add(r, c, t, answer)
    return stitchers


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
