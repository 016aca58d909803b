"""Requests a user can get wrong, each with the status and error kind GeoSeg documents for it
(docs/serving.md, "Errors"). Used by the reliability and soak tests."""
from __future__ import annotations

import io
from typing import NamedTuple, Optional

import numpy as np
import tifffile
from PIL import Image

from tests.helpers import bomb_png, corrupt_middle, geotiff_bytes, truncated
from tests.serving import png


class BadRequest(NamedTuple):
    """``body`` with ``headers``, or the multipart ``form`` when given; the answer must be
    ``status`` with ``detail.kind`` == ``kind``."""

    name: str
    body: bytes
    headers: dict
    form: Optional[dict]
    status: int
    kind: str


def zero_width_png() -> bytes:
    return png(np.zeros((10, 1, 3), np.uint8)).replace(
        b"IHDR\x00\x00\x00\x01", b"IHDR\x00\x00\x00\x00", 1)


def garbled_pixels(data: bytes, offset: int, count: int) -> bytes:
    """``data`` with 200 random bytes written a quarter into its pixel data (``offset``,
    ``count`` bytes long): headers intact, compressed stream broken."""
    start = offset + count // 4
    return data[:start] + np.random.default_rng(0).bytes(200) + data[start + 200:]


def png_with_bad_pixel_data(rgb: np.ndarray) -> bytes:
    data = png(rgb)
    idat = data.index(b"IDAT")
    return garbled_pixels(data, idat + 4, int.from_bytes(data[idat - 4:idat], "big"))


def lzw_tiff(rgb: np.ndarray) -> bytes:
    """Pillow's LZW TIFF: header, strips, then the image directory at the end."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="TIFF", compression="tiff_lzw")
    return buf.getvalue()


def lzw_tiff_with_bad_pixel_data(rgb: np.ndarray) -> bytes:
    data = lzw_tiff(rgb)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        return garbled_pixels(data, page.dataoffsets[0], page.databytecounts[0])


def two_file_parts(first: bytes, second: bytes) -> tuple[bytes, dict]:
    """A multipart body with two parts both named ``file`` (TorchServe keeps only the last)."""
    boundary = "geoseg-two-files"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + part
                    + b"\r\n" for i, part in enumerate((first, second)))
    return body + f"--{boundary}--\r\n".encode(), \
        {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def bad_requests(scene: np.ndarray) -> list[BadRequest]:
    """Every documented input fault, built around ``scene`` ((H, W, 3) uint8, H, W > 40);
    the pixel-limit case assumes ``max_pixels`` below 1001 x 1000 (the stand-in archives)."""
    scene_png, small_png = png(scene), png(scene[:40, :40])
    cases = [
        ("empty body", b"", {}, None, 400, "empty"),
        ("text", b"a land-cover map, please", {}, None, 415, "unsupported_format"),
        ("random bytes", np.random.default_rng(1).bytes(5000), {}, None, 415,
         "unsupported_format"),
        ("JSON document", b'{"image": "x"}', {"Content-Type": "application/json"}, None, 415,
         "not_image"),
        ("truncated PNG", truncated(scene_png), {}, None, 400, "corrupt"),
        ("truncated JPEG", truncated(png(scene, "JPEG")), {}, None, 400, "corrupt"),
        ("truncated TIFF", truncated(geotiff_bytes(np.moveaxis(scene, -1, 0).copy())), {},
         None, 400, "corrupt"),
        ("PNG header, corrupt data", png_with_bad_pixel_data(scene), {}, None, 400, "corrupt"),
        ("TIFF header, corrupt LZW data", lzw_tiff_with_bad_pixel_data(scene), {}, None, 400,
         "corrupt"),
        ("TIFF, damaged directory", corrupt_middle(lzw_tiff(scene)), {}, None, 400,
         "corrupt"),
        ("decompression bomb", bomb_png(), {}, None, 413, "too_many_pixels"),
        ("0-pixel image", zero_width_png(), {}, None, 400, "empty_image"),
        ("above the pixel limit", png(np.zeros((1001, 1000, 3), np.uint8)), {}, None, 413,
         "too_many_pixels"),
        ("wrong field name", b"", {}, {"image": scene_png}, 400, "missing_file"),
        ("two files, two names", b"", {}, {"file": scene_png, "file2": small_png}, 400,
         "unexpected_field"),
        ("two files, one name", *two_file_parts(scene_png, small_png), None, 400,
         "repeated_field"),
        ("unknown format field", b"", {}, {"file": scene_png, "format": b"bmp"}, 400,
         "unknown_format"),
        ("unknown format header", scene_png, {"X-GeoSeg-Format": "svg"}, None, 400,
         "unknown_format"),
        ("unacceptable Accept", scene_png, {"Accept": "text/html"}, None, 406, "not_acceptable"),
    ]
    return [BadRequest(*case) for case in cases]
