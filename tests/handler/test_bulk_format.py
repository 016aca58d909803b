"""The bulk format: a ``.npy`` array in, a ``.npy`` class map out (handler/decode.py,
handler/encode.py): same answers as PNG, same limits, one-line 4xx for a bad header."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from handler.decode import decode_image
from handler.errors import RequestError
from handler.geoseg_handler import GeoSegHandler
from handler.scaling import BandScaling
from tests.helpers import png_bytes
from tests.standins import StandInContext, write_standin
from training.data.synthetic import generate_scene


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def huge_header() -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (100_000, 100_000, 3)})
    return buf.getvalue() + b"\x00" * 64


def test_npy_pixels_and_validity_are_read_as_png_and_alpha_are() -> None:
    rgb, _ = generate_scene((20, 30), seed=3)
    assert np.array_equal(decode_image(npy(rgb), 10_000).rgb, rgb)
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=2)
    rgba[:5, :7, 3] = 0
    from_npy, from_png = decode_image(npy(rgba), 10_000), decode_image(png_bytes(rgba), 10_000)
    assert np.array_equal(from_npy.rgb, from_png.rgb)
    assert np.array_equal(from_npy.valid, from_png.valid) and (~from_npy.valid).sum() == 35
    grey = decode_image(npy(rgb[..., 0]), 10_000).rgb
    assert np.array_equal(grey, np.repeat(rgb[..., :1], 3, axis=2))


def test_npy_16_bit_bands_are_scaled_by_the_models_statistics() -> None:
    raw = np.random.default_rng(0).integers(1000, 5000, (8, 9, 3)).astype(np.uint16)
    scaling = BandScaling((1000.0,) * 3, (5000.0,) * 3)
    rgb = decode_image(npy(raw), 10_000, scaling).rgb
    expected = np.round((raw.astype(np.float64) - 1000) / 4000 * 255).astype(np.uint8)
    assert np.array_equal(rgb, expected)


@pytest.mark.parametrize("data, status, words", [
    (npy(np.zeros((4, 4, 3), np.complex64)), 415, "dtype"),
    (npy(np.zeros((4, 4, 3), bool)), 415, "dtype"),
    (npy(np.asfortranarray(np.zeros((4, 5, 3), np.uint8))), 415, "Fortran"),
    (npy(np.zeros((4, 4, 5), np.uint8)), 415, "shape"),
    (npy(np.zeros((2, 4, 4, 3), np.uint8)), 415, "shape"),
    (npy(np.zeros((4, 4, 3), np.uint8))[:-5], 400, "truncated"),
    (npy(np.zeros((4, 4, 3), np.uint8)) + b"x", 400, "truncated"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}  \n", 400, "header"),
    (b"\x93NUMPY\x01\x00\x46\x00{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, }\n",
     400, "header"),
    (huge_header(), 413, "exceeds"),  # refused from the header: nothing allocated
])
def test_bad_npy_requests_are_one_line_4xx(data: bytes, status: int, words: str) -> None:
    with pytest.raises(RequestError) as caught:
        decode_image(data, 1_000_000)
    assert caught.value.status == status and words in str(caught.value)


def test_the_handler_answers_npy_for_npy_like_png_for_png(tmp_path) -> None:
    write_standin(tmp_path / "standin.pt")
    rgb, _ = generate_scene((70, 90), seed=1)
    ctx = StandInContext(tmp_path, headers={0: {"Accept": "application/x-npy"}})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    bulk, png = handler.handle([{"body": npy(rgb)}, {"body": png_bytes(rgb)}], ctx)
    assert ctx.content_type[0] == "application/x-npy"
    classes = np.load(io.BytesIO(bulk), allow_pickle=False)
    with Image.open(io.BytesIO(png)) as im:
        assert np.array_equal(classes, np.asarray(im)) and classes.dtype == np.uint8
    assert len(np.unique(classes)) >= 2
    ctx = StandInContext(tmp_path)
    (answer,) = handler.handle([{"body": npy(np.zeros((3, 3, 7), np.uint8))}], ctx)
    assert ctx.status == {0: 415} and "shape" in json.loads(answer)["error"]
