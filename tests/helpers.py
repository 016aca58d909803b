"""Test helpers shared by several test modules: image bytes, broken images, mutations.

Builders return encoded bytes (PNG, JPEG, GeoTIFF) or (H, W, 3) uint8 arrays; the broken-image
helpers and :func:`mutate` derive invalid inputs from valid ones.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def png_bytes(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    """``array`` encoded by Pillow (PNG unless ``format=`` says otherwise)."""
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def geotiff_bytes(bands: np.ndarray, crs: str = "EPSG:32634", nodata: float | None = None) -> bytes:
    """(C, H, W) bands as a GeoTIFF in ``crs`` with 0.5 m pixels (and ``nodata`` when given)."""
    import rasterio
    from rasterio.transform import from_origin

    count, h, w = bands.shape
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=w, height=h, count=count, dtype=bands.dtype,
                      crs=crs, transform=from_origin(500000.0, 4000000.0, 0.5, 0.5),
                      nodata=nodata) as dst:
            dst.write(bands)
        return bytes(mem.read())


def rgb_image(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 random pixels."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def truncated(data: bytes) -> bytes:
    """The first two thirds of ``data``."""
    return data[: len(data) * 2 // 3]


def corrupt_middle(data: bytes) -> bytes:
    """``data`` with its second half zeroed (valid header, broken pixel data)."""
    b = bytearray(data)
    b[len(b) // 2:] = bytes(len(b) - len(b) // 2)
    return bytes(b)


def bomb_png() -> bytes:
    """A small PNG that declares 30000 x 30000 pixels (900 Mpx)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def _seeds() -> list[bytes]:
    """Valid PNG, JPEG, TIFF, LZW TIFF, GIF and GeoTIFF files of one (24, 32, 3) image."""
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = []
    for fmt, extra in (("PNG", {}), ("JPEG", {"quality": 90}), ("TIFF", {}),
                       ("TIFF", {"compression": "tiff_lzw"}), ("GIF", {})):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, **extra)
        out.append(buf.getvalue())
    out.append(geotiff_bytes(np.moveaxis(rgb, -1, 0).copy()))
    return out


SEEDS = _seeds()

mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(b"")),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 20), st.just(b"")),
)


def mutate(data: bytes, ops) -> bytes:
    """Apply ``ops`` (from :data:`mutation`) to ``data``: overwrite, cut the tail, repeat 64 bytes."""
    b = bytearray(data)
    for kind, pos, value in ops:
        if not b:
            break
        pos %= len(b)
        if kind == "set":
            b[pos:pos + len(value)] = value
        elif kind == "cut":
            del b[pos:]
        else:
            b[pos:pos] = b[pos:pos + 64]
    return bytes(b)


