"""Every picture GeoSeg writes names its classes beside their colours; default colours can be
told apart; the map's colour table holds only the classes; validation pictures show the whole
raster with all its held-out points."""
from __future__ import annotations

import io
import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from PIL import Image

from handler.encode import class_tags, encode, overlay_rgb
from model.class_table import IGNORE_INDEX, ClassTable
from scene.output import colormap, write_category_names, write_preview
from scene.source import SceneSource
from tests.scenes import ORIGIN, PIXEL_M, scene_bands, write_scene
from training.points.evaluation import ValidationRaster, validate_points
from training.run.pictures import comparison_picture

LANDCOVER = ClassTable.load()
DUBAI = ClassTable.load(Path(__file__).parents[2] / "training" / "tables" / "dubai-aerial.json")
DUBAI_MASK_CODES = ((132, 41, 246), (226, 169, 41), (60, 16, 152), (254, 221, 58),
                    (110, 193, 228))
"""The colours that code the classes in dubai-aerial's masks (measured; its README)."""


def colour_pixels(picture: np.ndarray, colour: tuple[int, int, int], tolerance: int = 0) -> int:
    """How many pixels of (H, W, 3) ``picture`` are within ``tolerance`` of ``colour``."""
    diff = np.abs(picture.astype(np.int16) - np.asarray(colour, np.int16)).max(axis=2)
    return int((diff <= tolerance).sum())


def assert_legend(area: np.ndarray, table: ClassTable, tolerance: int = 0) -> None:
    """``area`` holds a swatch (at least 6 x 6 px) of every class colour and dark text."""
    for name, colour in zip(table.names, table.colors):
        assert colour_pixels(area, colour, tolerance) >= 36, f"no swatch of {name} {colour}"
    assert colour_pixels(area, (0, 0, 0), max(tolerance, 40)) >= 50, "no text"


# ------------------------------------------------------------------------ pictures have legends


def test_the_served_overlay_has_the_legend_in_a_corner_and_keeps_the_input_size():
    h, w = 300, 400
    rgb = np.full((h, w, 3), 128, np.uint8)  # blended class colours stay far from the pure ones
    classes = (np.arange(h * w).reshape(h, w) // (h * w // 5)).astype(np.uint8)
    body, ctype = encode("overlay", classes, rgb, LANDCOVER, None)
    with Image.open(io.BytesIO(body)) as im:
        assert ctype == "image/jpeg" and im.size == (w, h)
        picture = np.asarray(im.convert("RGB"))
    assert_legend(picture[h // 2:, :w // 2], LANDCOVER, tolerance=24)  # lower left, JPEG
    assert colour_pixels(picture[:h // 2], LANDCOVER.colors[1], 24) == 0  # nowhere else
    again, _ = encode("overlay", classes, rgb, LANDCOVER, None)
    assert again == body  # deterministic


def test_an_overlay_too_small_for_the_legend_is_left_whole():
    rgb = np.full((60, 90, 3), 128, np.uint8)
    classes = np.ones((60, 90), np.uint8)
    body, _ = encode("overlay", classes, rgb, LANDCOVER, None)
    with Image.open(io.BytesIO(body)) as im:
        picture = np.asarray(im.convert("RGB")).astype(np.int16)
    assert np.abs(picture - overlay_rgb(rgb, classes, LANDCOVER)).max() <= 8


def test_the_predict_preview_has_the_legend(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", scene_bands(300, 370))
    classes = tmp_path / "classes.tif"
    ids = (np.arange(300 * 370).reshape(300, 370) // (300 * 370 // 5)).astype(np.uint8)
    with rasterio.open(classes, "w", driver="GTiff", width=370, height=300, count=1,
                       dtype="uint8", nodata=255) as dst:
        dst.write(ids[None])
    with SceneSource(scene, None) as source:
        write_preview(source, classes, tmp_path / "preview.png", DUBAI)
    with Image.open(tmp_path / "preview.png") as im:
        picture = np.asarray(im.convert("RGB"))
    assert picture.shape == (300, 370, 3)
    assert_legend(picture[150:, :185], DUBAI)


def test_training_pictures_end_in_a_legend_strip():
    image = np.full((40, 50, 3), 90, np.uint8)
    prediction = np.zeros((40, 50), np.uint8)
    points = np.array([[5, 5, 0], [30, 40, 1]], np.int64)
    picture = comparison_picture(image, points, prediction, None, DUBAI)
    assert picture.shape[1] == 4 * 50 + 12 and picture.shape[0] >= 40 + 16 + 18
    assert_legend(picture[40 + 16:], DUBAI)


def test_the_map_figure_has_a_legend(tmp_path):
    from tools.figure_map import figure

    scene = write_scene(tmp_path / "scene.tif", scene_bands(120, 160))
    classes = tmp_path / "classes.tif"
    ids = np.repeat(np.arange(5, dtype=np.uint8), 32)[None, :].repeat(120, axis=0)
    with rasterio.open(scene) as src:
        profile = {"crs": src.crs, "transform": src.transform}
    with rasterio.open(classes, "w", driver="GTiff", width=160, height=120, count=1,
                       dtype="uint8", nodata=255, **profile) as dst:
        dst.write(ids[None])
        dst.write_colormap(1, colormap(DUBAI))
        dst.update_tags(1, **class_tags(DUBAI))
    x0, y0 = ORIGIN
    square = shapely.box(x0 + 10 * PIXEL_M, y0 - 50 * PIXEL_M, x0 + 50 * PIXEL_M, y0 - 10 * PIXEL_M)
    polygons = tmp_path / "polygons.gpkg"
    pyogrio.raw.write(polygons, np.array([shapely.to_wkb(square)], dtype=object),
                      [np.array([2], np.int32)], ["class_id"], geometry_type="Polygon",
                      crs=str(profile["crs"]), driver="GPKG")
    picture = figure(scene, classes, polygons, 160)
    assert picture.shape[1] == 3 * 160 + 8 and picture.shape[0] >= 120 + 16 + 18
    assert_legend(picture[120 + 16:], DUBAI)


def test_the_ablation_picture_has_a_legend(tiny_folders, tmp_path, monkeypatch):
    import training.experiments.ablation_pictures as ablation

    monkeypatch.setattr(ablation, "predictions",
                        lambda run, image: np.zeros(image.shape[:2], np.uint8))
    out = tmp_path / "ablation.png"
    assert ablation.main(["--data", str(tiny_folders), "--dataset", "folders", "--plain", "a",
                          "--best", "b", "--images", "0", "--points-per-class", "2",
                          "--out", str(out)]) == 0
    table = ClassTable.load(tiny_folders / "classes.json")
    with Image.open(out) as im:
        picture = np.asarray(im.convert("RGB"))
    assert_legend(picture[48 + 16:], table)


# ------------------------------------------------------------------------ colours told apart


def lab(rgb: tuple[int, int, int]) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour."""
    c = np.asarray(rgb, np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ c / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("table", [LANDCOVER, DUBAI], ids=["landcover.ai", "dubai-aerial"])
def test_default_class_colours_are_far_apart(table):
    """Every pair of display colours differs by CIE76 delta E >= 40 (the dubai masks' land and
    building purples differ by about 37)."""
    for (a, ca), (b, cb) in itertools.combinations(zip(table.names, table.colors), 2):
        assert np.linalg.norm(lab(ca) - lab(cb)) >= 40, f"{a} {ca} and {b} {cb} look alike"


def test_dubai_masks_are_read_with_the_datasets_own_codes():
    mask = np.array([[DUBAI_MASK_CODES[i] for i in range(5)] + [[155, 155, 155], [0, 0, 0]]],
                    np.uint8)
    assert DUBAI.mask_from_colors(mask).tolist() == [[0, 1, 2, 3, 4, IGNORE_INDEX, IGNORE_INDEX]]
    assert DUBAI.colorize_mask(np.array([[0, 1, 2, 3, 4]])).tolist() == [[list(c) for c in DUBAI_MASK_CODES]]
    assert DUBAI.colorize(np.array([[2]])).tolist() == [[list(DUBAI.colors[2])]]
    assert DUBAI.colors[2] != DUBAI_MASK_CODES[2]  # shown in its own colour, not the code


def test_a_table_without_mask_colours_reads_masks_in_its_colours_and_round_trips():
    old = {"name": "old", "classes": [{"id": 0, "name": "a", "color": [1, 2, 3]},
                                      {"id": 1, "name": "b", "color": [4, 5, 6]}],
           "ignore_colors": []}
    table = ClassTable.from_dict(old)
    assert table.mask_codes == table.colors and table.to_dict() == old
    assert table.mask_from_colors(np.array([[[4, 5, 6], [1, 2, 3]]], np.uint8)).tolist() == [[1, 0]]
    assert ClassTable.from_dict(json.loads(json.dumps(DUBAI.to_dict()))) == DUBAI


# ------------------------------------------------------------------------ the map's colour table


def test_the_maps_colour_table_and_category_names_hold_only_the_classes(tmp_path):
    out = tmp_path / "map.tif"
    with rasterio.open(out, "w", driver="GTiff", width=8, height=4, count=1, dtype="uint8",
                       nodata=255, crs="EPSG:32640",
                       transform=rasterio.transform.from_origin(*ORIGIN, 1, 1)) as dst:
        dst.write(np.arange(32, dtype=np.uint8).reshape(1, 4, 8) % 5)
        dst.write_colormap(1, colormap(DUBAI))
    write_category_names(out, DUBAI)
    with rasterio.open(out) as src:
        entries = src.colormap(1)
    assert entries == {i: (*c, 255) for i, c in enumerate(DUBAI.colors)}
    categories = ET.parse(f"{out}.aux.xml").findall(".//Category")
    assert [c.text for c in categories] == list(DUBAI.names)


# ------------------------------------------------------------------------ whole validation rasters


def red_threshold(x: torch.Tensor, margin: int | None = None) -> torch.Tensor:
    """A pixel-wise stand-in network: class = red channel > 0.5, (1, 3, H, W) -> (1, H, W)."""
    return (x[:, 0] > 0.5).long()


def test_a_validation_picture_shows_the_whole_raster_and_all_its_points(tmp_path, monkeypatch):
    h, w = 700, 900
    rows, cols = np.mgrid[:h, :w]
    red = np.where((cols // 300) % 2 == 1, 230, 20).astype(np.uint8)
    raster = write_scene(tmp_path / "val.tif", np.stack([red, (rows % 200).astype(np.uint8),
                                                         np.full((h, w), 90, np.uint8)]),
                         nodata=None)
    points = np.array([[10, 10, 0], [650, 880, 0], [350, 450, 1], [690, 20, 1], [5, 895, 0]],
                      np.int64)
    table = ClassTable(names=("dark", "red"), colors=((40, 100, 220), (220, 40, 40)))
    monkeypatch.setattr("training.points.evaluation.WHOLE_RASTER_PIXELS", 1000)  # 512 px cells
    monkeypatch.setattr("training.points.evaluation.PICTURE_SIDE", 300, raising=False)
    validate_points(red_threshold, [ValidationRaster(raster, points)], table,
                    picture_dir=tmp_path / "pictures", max_pictures=1, progress=False)
    with Image.open(tmp_path / "pictures" / "val.png") as im:
        picture = np.asarray(im.convert("RGB")).astype(np.int16)
    ph, pw = round(h * 300 / w), 300  # the whole raster, shrunk
    assert picture.shape[1] == 4 * pw + 12 and picture.shape[0] > ph + 16
    panels = [picture[16:16 + ph, k * (pw + 4):k * (pw + 4) + pw] for k in range(4)]
    image, dots, prediction = panels[:3]
    dimmed = (image * 0.55).astype(np.int16)
    for r, c, _ in points * [300 / w, 300 / w, 1]:  # every held-out point drawn where it is
        near = dots[max(0, int(r) - 4):int(r) + 5, max(0, int(c) - 4):int(c) + 5]
        assert np.abs(near - dimmed[max(0, int(r) - 4):int(r) + 5,
                                    max(0, int(c) - 4):int(c) + 5]).max() > 40, (r, c)
    # the cells holding points are predicted where they lie: red columns 300-599 -> class 1
    assert colour_pixels(prediction[:, 100:200], table.colors[1]) > 0.9 * ph * 100
    assert colour_pixels(prediction[:20, :100], table.colors[0]) > 0.9 * 20 * 100
    assert_legend(picture[16 + ph:], table)
