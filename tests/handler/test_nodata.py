"""No-data pixels and scene edges in the handler: nodata / alpha in, 255 out, left out of the
statistics; a clean class GeoTIFF; borders tiled with reflected context."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import rasterio
import tifffile
import torch
from PIL import Image

from handler.decode import decode_image
from handler.geoseg_handler import GeoSegHandler
from handler.scaling import BandScaling, to_uint8
from handler.tiling import plan_tiles, read_window, reflect_index, segment_images
from tests.helpers import geotiff_bytes, png_bytes
from tests.standins import StandInContext, write_standin
from training.data.synthetic import generate_scene

COLLAR = 6


@pytest.fixture()
def served(tmp_path):
    write_standin(tmp_path / "standin.pt")
    return tmp_path


def answer(served, body: bytes, fmt: str, headers: dict | None = None) -> tuple[bytes, StandInContext]:
    ctx = StandInContext(served, headers={0: {"X-GeoSeg-Format": fmt, **(headers or {})}})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    return handler.handle([{"body": body}], ctx)[0], ctx


def collared_scene() -> tuple[np.ndarray, np.ndarray]:
    """(3, 60, 80) uint8 bands whose outer COLLAR pixels are 0 (the nodata value), and the
    (60, 80) bool mask of valid pixels."""
    rgb, _ = generate_scene((60, 80), seed=3)
    bands = np.moveaxis(rgb, -1, 0).copy()
    bands[bands == 0] = 1  # no real pixel equals the nodata value
    valid = np.zeros((60, 80), bool)
    valid[COLLAR:-COLLAR, COLLAR:-COLLAR] = True
    bands[:, ~valid] = 0
    return bands, valid


def test_nodata_collar_of_a_geotiff_is_255_in_the_class_geotiff(served):
    bands, valid = collared_scene()
    body, ctx = answer(served, geotiff_bytes(bands, nodata=0), "geotiff")
    assert ctx.status == {}
    with rasterio.MemoryFile(body) as mem, mem.open() as src:
        classes = src.read(1)
        assert src.nodata == 255
        assert src.crs.to_epsg() == 32634
        assert src.tags(1)["CLASS_2"] == "woodland" and src.descriptions == ("land cover class",)
    assert np.all(classes[~valid] == 255) and np.all(classes[valid] < 5)
    names = {t.name for t in tifffile.TiffFile(io.BytesIO(body)).pages[0].tags.values()}
    assert not names & {"ImageDescription", "Software"}


def test_json_statistics_leave_nodata_out(served):
    bands, valid = collared_scene()
    body, _ = answer(served, geotiff_bytes(bands, nodata=0), "json")
    summary = json.loads(body)
    assert summary["nodata_pixels"] == int((~valid).sum())
    assert sum(c["pixels"] for c in summary["classes"]) == int(valid.sum())
    assert abs(sum(c["area_m2"] for c in summary["classes"]) - valid.sum() * 0.25) < 1e-6
    assert abs(sum(c["fraction"] for c in summary["classes"]) - 1.0) < 1e-9


def test_transparent_pixels_of_an_rgba_png_are_nodata(served):
    rgb, _ = generate_scene((40, 50), seed=5)
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[:10] = 0
    body, _ = answer(served, png_bytes(np.dstack([rgb, alpha]), mode="RGBA"), "png")
    classes = np.asarray(Image.open(io.BytesIO(body)))
    assert np.all(classes[:10] == 255) and np.all(classes[10:] < 5)


def test_a_geotiff_without_nodata_has_every_pixel_valid():
    bands, _ = collared_scene()
    assert decode_image(geotiff_bytes(bands), 10 ** 6).valid is None


def test_stretch_fallback_ignores_the_nodata_value():
    rng = np.random.default_rng(0)
    bands = rng.integers(1000, 3000, (3, 30, 40)).astype(np.uint16)
    with_collar = bands.copy()
    with_collar[:, :, :15] = 65535  # a nodata value far outside the data's range
    image = decode_image(geotiff_bytes(with_collar, nodata=65535), 10 ** 6)
    valid = image.valid
    assert valid is not None and not valid[:, :15].any()
    reference = to_uint8(bands[:, :, 15:])  # the same pixels alone
    np.testing.assert_array_equal(np.moveaxis(image.rgb, -1, 0)[:, :, 15:], reference)


def test_model_band_statistics_replace_the_per_image_stretch():
    bands = np.random.default_rng(1).integers(0, 4000, (3, 20, 30)).astype(np.uint16)
    scaling = BandScaling((0.0, 0.0, 0.0), (4000.0, 4000.0, 4000.0))
    left = decode_image(geotiff_bytes(np.ascontiguousarray(bands[:, :, :15])), 10 ** 6, scaling)
    whole = decode_image(geotiff_bytes(bands), 10 ** 6, scaling)
    np.testing.assert_array_equal(left.rgb, whole.rgb[:, :15])  # no per-piece stretch
    np.testing.assert_array_equal(whole.rgb[..., 0], np.round(bands[0] / 4000 * 255).astype(np.uint8))


def test_bad_edges_header_is_refused(served):
    bands, _ = collared_scene()
    body, ctx = answer(served, geotiff_bytes(bands), "png", {"X-GeoSeg-Edges": "wrap"})
    assert ctx.status == {0: 400} and json.loads(body)["detail"]["kind"] == "unknown_edges"


@pytest.mark.parametrize("length", [1, 2, 5, 13])
def test_reflection_equals_numpy_reflect_padding_far_out(length):
    row = np.arange(length)
    pad = 3 * length + 4
    expected = np.pad(row, pad, mode="reflect") if length > 1 else np.zeros(2 * pad + 1, int)
    np.testing.assert_array_equal(row[reflect_index(np.arange(-pad, length + pad), length)],
                                  expected)
    image = np.arange(length * 7 * 3).reshape(length, 7, 3)
    window = read_window(image, -pad, length + pad, -9, 16)
    if length > 1:
        np.testing.assert_array_equal(window, np.pad(image, ((pad, pad), (9, 9), (0, 0)), "reflect"))


def zero_padding_detector(batch: np.ndarray) -> np.ndarray:
    """Class 1 where a 5x5 mean with zero padding differs from the pixel: a model that paints
    the border of whatever it is given."""
    x = torch.from_numpy(batch[..., 0].astype(np.float32))[:, None]
    mean = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    return (mean != x)[:, 0].numpy().astype(np.uint8)


def test_scene_borders_get_reflected_context_instead_of_zero_padding():
    image = np.full((100, 130, 3), 200, np.uint8)  # uniform: any class 1 comes from padding
    reflected = segment_images([image], zero_padding_detector, 40, 8, 2)[0]
    bare = segment_images([image], zero_padding_detector, 40, 8, 2, margins=[0])[0]
    assert reflected.max() == 0
    assert bare[0].all() and bare[:, 0].all() and bare[2:-2, 2:-2].max() == 0


def test_an_image_of_one_tile_still_costs_one_tile():
    assert len(plan_tiles(512, 512, 512, 64)) == 1
    assert len(plan_tiles(480, 500, 512, 64)) == 1
    assert plan_tiles(480, 500, 512, 64)[0].y == -16  # centred: 16 reflected rows each side
