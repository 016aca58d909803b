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


def huge_header(shape: tuple[int, ...] = (100_000, 100_000, 3)) -> bytes:
    """A ``.npy`` header announcing ``shape`` (uint8), followed by 64 bytes instead of its pixels."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": shape})
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
    (npy(np.zeros((1, 2, 4, 4, 3), np.uint8)), 415, "shape"),
    (npy(np.zeros((2, 4, 4, 5), np.uint8)), 415, "shape"),
    (npy(np.zeros((0, 4, 4, 3), np.uint8)), 400, "no pixels"),
    (npy(np.zeros((2, 4, 4, 3), np.uint8))[:-5], 400, "truncated"),
    (npy(np.zeros((4, 4, 3), np.uint8))[:-5], 400, "truncated"),
    (npy(np.zeros((4, 4, 3), np.uint8)) + b"x", 400, "truncated"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}  \n", 400, "header"),
    (b"\x93NUMPY\x01\x00\x46\x00{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, }\n",
     400, "header"),
    (huge_header(), 413, "exceeds"),  # refused from the header: nothing allocated
    (huge_header((20, 300, 200, 3)), 413, "stack of 20 images of 200x300 = 1200000 pixels"),
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


def test_a_stack_is_read_as_its_images_one_by_one() -> None:
    """(N, H, W, C): each image decoded as if sent alone, a 16-bit one stretched on its own."""
    rgba = np.stack([np.concatenate([generate_scene((20, 30), seed=s)[0],
                                     np.full((20, 30, 1), 255, np.uint8)], axis=2) for s in (1, 2)])
    rgba[1, :4, :5, 3] = 0
    stack = decode_image(npy(rgba), 1200)
    assert stack.stacked and stack.rgb.shape == (2, 20, 30, 3)
    for (rgb, valid), alone in zip(stack.frames(), rgba):
        one = decode_image(npy(alone), 600)
        assert np.array_equal(rgb, one.rgb) and not one.stacked
        everywhere = np.ones((20, 30), bool)  # None: every pixel valid
        assert np.array_equal(everywhere if valid is None else valid,
                              everywhere if one.valid is None else one.valid)
    assert (~stack.frames()[1][1]).sum() == 20
    raw = np.random.default_rng(0).integers(0, 4000, (3, 8, 9, 3)).astype(np.uint16)
    raw[1] //= 10  # another range: a per-image stretch differs from one over the stack
    frames = decode_image(npy(raw), 1000).rgb
    for frame, alone in zip(frames, raw):
        assert np.array_equal(frame, decode_image(npy(alone), 1000).rgb)


def test_the_handler_answers_a_stack_as_each_image_alone(tmp_path) -> None:
    """A stack of 3 images, one with no-data pixels, beside a PNG in the same batch: one
    (3, H, W) .npy without asking, equal to each image's own answer; other formats refused."""
    write_standin(tmp_path / "standin.pt")
    images = np.stack([generate_scene((70, 90), seed=s)[0] for s in (1, 2, 3)])
    valid = np.full((3, 70, 90, 1), 255, np.uint8)
    valid[2, 10:20, 30:60] = 0
    handler = GeoSegHandler()
    ctx = StandInContext(tmp_path, headers={1: {"Accept": "*/*"}, 2: {"X-GeoSeg-Format": "png"}})
    handler.initialize(ctx)
    stack = npy(np.concatenate([images, valid], axis=3))
    alone, answer, refused = handler.handle(
        [{"body": png_bytes(images[0])}, {"body": stack}, {"body": stack}], ctx)
    assert ctx.content_type[1] == "application/x-npy" and ctx.status == {2: 400}
    assert "stack of 3 images" in json.loads(refused)["error"]
    classes = np.load(io.BytesIO(answer), allow_pickle=False)
    assert classes.shape == (3, 70, 90) and classes.dtype == np.uint8
    with Image.open(io.BytesIO(alone)) as im:
        assert np.array_equal(classes[0], np.asarray(im))
    for i in (1, 2):
        ctx = StandInContext(tmp_path, headers={0: {"Accept": "application/x-npy"}})
        (one,) = handler.handle([{"body": npy(np.concatenate([images[i], valid[i]], axis=2))}], ctx)
        assert np.array_equal(classes[i], np.load(io.BytesIO(one), allow_pickle=False))
    assert (classes[2, 10:20, 30:60] == 255).all() and (classes[:2] != 255).all()
    assert len(np.unique(classes)) >= 3
    assert ctx.metrics.total("GeoSegTiles") > 0
