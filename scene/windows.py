"""The windows a scene is mapped in: blocks of whole tiles of the handler's tiling.

The scene's tiles (``handler.tiling.axis_spans``, edges reflected, a regular grid) are grouped
into blocks of ``tiles_per_window`` x ``tiles_per_window``. A block's window writes the scene
from the first pixel of its first tile to the first pixel of the next block's; a pixel there
may also lie in the last tile of the block before (their overlap strip, where tiles are
blended), so a window is read with that tile too, and segmented on its own with no added
margin. Its tiling then coincides with the scene's (same tile origins, same taper weights on
the pixels it writes), so the mosaic of windows equals one request for the whole scene, pixel
for pixel, and each window is an independent job (a request to a server, a part on disk for
``--resume``). With the hard split (``tile_blend: centre``) a window reads only its own tiles
and writes what they keep.
"""
from __future__ import annotations

from dataclasses import dataclass

from handler.tiling import Span, axis_spans
from scene.source import Window


@dataclass(frozen=True)
class SceneWindow:
    """Window ``index`` (row-major): ``read`` is the pixels to segment (image coordinates,
    context included), ``keep`` the part of the scene it writes, ``tiles`` how many tiles."""

    index: int
    read: Window
    keep: Window
    tiles: int


def _groups(spans: list[Span], size: int, tile: int, length: int, blended: bool
            ) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    """((read_from, read_to), (keep_from, keep_to), tiles) for consecutive groups of ``size``
    spans along an axis of ``length`` pixels. ``blended``: a group keeps from its first tile's
    start (0 for the first) to the next group's, and reads from the previous group's last tile
    on; else (hard split) it keeps its tiles' kept centres and reads only its own tiles."""
    groups = []
    starts = [s for s, _ in spans]
    for i in range(0, len(spans), size):
        first, last = i, min(len(spans), i + size) - 1
        if blended:
            keep_from = 0 if i == 0 else starts[i]
            keep_to = length if last == len(spans) - 1 else starts[last + 1]
            first = max(0, i - 1)
        else:
            keep_from, keep_to = spans[first][1][0], spans[last][1][1]
        groups.append(((starts[first], starts[last] + tile), (keep_from, keep_to),
                       last - first + 1))
    return groups


def plan_windows(height: int, width: int, tile: int, overlap: int,
                 tiles_per_window: int, blended: bool = True) -> list[SceneWindow]:
    """The windows of a ``height`` x ``width`` scene, row by row; ``blended``: for tiles joined
    by the taper (each window also reads the tile before it), else for the hard split."""
    if tiles_per_window < 1:
        raise ValueError("tiles_per_window must be at least 1")
    rows = _groups(axis_spans(height, tile, overlap), tiles_per_window, tile, height, blended)
    cols = _groups(axis_spans(width, tile, overlap), tiles_per_window, tile, width, blended)
    return [SceneWindow(r * len(cols) + c, Window(ry[0], ry[1], cx[0], cx[1]),
                        Window(ky[0], ky[1], kx[0], kx[1]), nr * nc)
            for r, (ry, ky, nr) in enumerate(rows) for c, (cx, kx, nc) in enumerate(cols)]


def keep_in_read(w: SceneWindow) -> tuple[slice, slice]:
    """The slices of a window's (h, w) result that the scene keeps."""
    return (slice(w.keep.y0 - w.read.y0, w.keep.y1 - w.read.y0),
            slice(w.keep.x0 - w.read.x0, w.keep.x1 - w.read.x0))
