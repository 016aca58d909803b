"""The windows a scene is mapped in: blocks of whole tiles of the handler's tiling.

The scene's tiles (``handler.tiling.axis_spans``, edges reflected) are grouped into blocks of
``tiles_per_window`` x ``tiles_per_window``. A window is read with the full extent of its
tiles and segmented on its own with no added margin; its tiling then coincides with the
scene's (same tile origins, same midpoints between them), and only the pixels its tiles keep
in the scene's tiling are written. So the mosaic of windows equals one request for the whole
scene, pixel for pixel, and each window is an independent job (a request to a server, a part
on disk for ``--resume``).
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


def _groups(spans: list[Span], size: int, tile: int) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    """((read_from, read_to), (keep_from, keep_to), tiles) for consecutive groups of ``size`` spans."""
    groups = []
    for i in range(0, len(spans), size):
        chunk = spans[i:i + size]
        groups.append(((chunk[0][0], chunk[-1][0] + tile), (chunk[0][1][0], chunk[-1][1][1]),
                       len(chunk)))
    return groups


def plan_windows(height: int, width: int, tile: int, overlap: int,
                 tiles_per_window: int) -> list[SceneWindow]:
    """The windows of a ``height`` x ``width`` scene, row by row."""
    if tiles_per_window < 1:
        raise ValueError("tiles_per_window must be at least 1")
    rows = _groups(axis_spans(height, tile, overlap), tiles_per_window, tile)
    cols = _groups(axis_spans(width, tile, overlap), tiles_per_window, tile)
    return [SceneWindow(r * len(cols) + c, Window(ry[0], ry[1], cx[0], cx[1]),
                        Window(ky[0], ky[1], kx[0], kx[1]), nr * nc)
            for r, (ry, ky, nr) in enumerate(rows) for c, (cx, kx, nc) in enumerate(cols)]


def keep_in_read(w: SceneWindow) -> tuple[slice, slice]:
    """The slices of a window's (h, w) result that the scene keeps."""
    return (slice(w.keep.y0 - w.read.y0, w.keep.y1 - w.read.y0),
            slice(w.keep.x0 - w.read.x0, w.keep.x1 - w.read.x0))
