"""A fixed, generated set of benchmark images with a manifest (no download).

Kinds: ``tiles`` (512x512 scenes, one tile each), ``scenes`` (2048x1536 scenes: many tiles),
``mixed`` (both), ``stacks`` (``stack`` 512x512 scenes in one request, the bulk format only).
Formats: ``png``, or ``npy`` (the bulk format: the (H, W, 3) uint8 pixels as a NumPy ``.npy``
file, answered the same way; a stack is one (N, H, W, 3) array, answered as (N, H, W)). The
manifest lists each file with its size, its format, its stack size (``stack``, stacks only) and
the number of tiles the server cuts it into, so load tests can report tiles/s.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.responses import npy_bytes
from handler.inference import HandlerConfig
from handler.tiling import plan_tiles
from training.data.synthetic import generate_scene

HANDLER = HandlerConfig()  # the served tile size and overlap
SIZES = {"tiles": (512, 512), "scenes": (1536, 2048), "stacks": (512, 512)}
FORMATS = ("png", "npy")


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    """(H, W, 3) uint8 as the bytes of a ``png`` or ``npy`` request body."""
    if fmt == "npy":
        return npy_bytes(rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def write_image_set(out: str | Path, kind: str = "tiles", count: int = 4, seed: int = 7,
                    tile: int = HANDLER.tile_size, overlap: int = HANDLER.tile_overlap,
                    fmt: str = "png", tile_side: int = SIZES["tiles"][0], stack: int = 16) -> Path:
    """Write ``count`` images of each size of ``kind`` in ``fmt``, plus ``manifest.json``
    (``tile_side``: the side of the ``tiles`` and ``stacks`` kinds, 512 unless a small run asks
    for less; ``stack``: images per request of the ``stacks`` kind)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}: {' or '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = ["tiles", "scenes"] if kind == "mixed" else [kind]
    if any(k not in SIZES for k in kinds):
        raise ValueError(f"unknown image set {kind!r}: tiles, scenes, mixed or stacks")
    if kind == "stacks" and (fmt != "npy" or stack < 1):
        raise ValueError("stacks are sent in the npy format, at least one image each")
    entries: list[dict[str, object]] = []
    for k in kinds:
        h, w = SIZES[k] if k == "scenes" else (tile_side, tile_side)
        images = stack if k == "stacks" else 1
        for i in range(count):
            frames = [generate_scene((h, w), seed * 1000 + len(entries) * images + j)[0]
                      for j in range(images)]
            name = f"{k}_{i:03d}.{fmt}"
            (out / name).write_bytes(encode(np.stack(frames) if k == "stacks" else frames[0], fmt))
            entry = {"file": name, "kind": k, "format": fmt, "width": w, "height": h,
                     "tiles": images * len(plan_tiles(h, w, tile, overlap))}
            entries.append({**entry, "stack": images} if k == "stacks" else entry)
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({"tile": tile, "overlap": overlap, "images": entries},
                                   indent=2) + "\n")
    return manifest
