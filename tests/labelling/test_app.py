"""The labelling page's logic without a browser: clicks saved in a GeoPackage that `geoseg
train` reads, reopening continues, one-line errors for bad input, the lock against a second
page, the quick map and suggestions."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelling.app import LabellingApp, PageError, TrainingSettings
from labelling.store import CLASS_FIELD, StoreError
from model.class_table import ClassTable
from scene.source import SceneError
from tests.labelling.rasters import pixel_centre, two_halves
from training.points.layer import match_points, read_point_layer


@pytest.fixture
def table() -> ClassTable:
    return ClassTable(("water", "sand", "road"), ((40, 100, 220), (214, 204, 163), (250, 200, 30)))


def test_clicks_are_saved_at_once_where_geoseg_train_finds_them(tmp_path, table):
    raster = two_halves(tmp_path / "ortho.tif")
    layer = tmp_path / "clicks.gpkg"
    app = LabellingApp([raster], layer, table)
    app.add({"image": "ortho", "row": 10.7, "col": 20.2, "class_id": 0})
    app.add({"image": "ortho", "row": 200.0, "col": 350.9, "class_id": 1})
    saved = read_point_layer(layer, CLASS_FIELD)  # read back while the page is still open
    assert saved.crs is not None and saved.crs.to_epsg() == 32640
    assert [f.value for f in saved.features] == ["water", "sand"]
    assert [f.image for f in saved.features] == ["ortho", "ortho"]
    assert (saved.features[0].x, saved.features[0].y) == pytest.approx(pixel_centre(10, 20))
    assert (saved.features[1].x, saved.features[1].y) == pytest.approx(pixel_centre(200, 350))
    mapping = {name: i for i, name in enumerate(table.names)}
    placed = match_points(saved, [raster], table, mapping)
    assert not placed.rejected
    assert sorted(map(tuple, placed.points[0].tolist())) == [(10, 20, 0), (200, 350, 1)]
    app.close()


def test_reopening_continues_and_moves_and_deletes_are_saved(tmp_path, table):
    raster = two_halves(tmp_path / "ortho.tif")
    layer = tmp_path / "clicks.gpkg"
    app = LabellingApp([raster], layer, table)
    first = app.add({"image": "ortho", "row": 5, "col": 5, "class_id": 0})
    second = app.add({"image": "ortho", "row": 6, "col": 300, "class_id": 1})
    app.move(first["id"], {"row": 50, "col": 60, "class_id": 2})
    app.delete(second["id"])
    app.close()
    again = LabellingApp([raster], layer, table)
    clicks = again.state()["clicks"]
    assert [(int(c["row"]), int(c["col"]), c["class_id"]) for c in clicks] == [(50, 60, 2)]
    third = again.add({"image": "ortho", "row": 1, "col": 1, "class_id": 1})
    assert third["id"] not in [c["id"] for c in clicks]
    assert len(read_point_layer(layer, CLASS_FIELD).features) == 2
    again.close()


def test_bad_requests_are_one_line_errors_and_change_nothing(tmp_path, table):
    app = LabellingApp([two_halves(tmp_path / "ortho.tif")], tmp_path / "clicks.gpkg", table)
    app.add({"image": "ortho", "row": 5, "col": 5, "class_id": 0})
    bad = [({"image": "ortho", "row": 5, "col": 5, "class_id": 7}, 400, "not in the class table"),
           ({"image": "ortho", "row": 5000, "col": 5, "class_id": 0}, 400, "outside"),
           ({"image": "other", "row": 5, "col": 5, "class_id": 0}, 404, "no raster"),
           ({"image": "ortho", "row": "5", "col": 5, "class_id": 0}, 400, "number")]
    for body, status, words in bad:
        with pytest.raises(PageError) as caught:
            app.add(body)
        assert caught.value.status == status and words in caught.value.message
        assert "\n" not in caught.value.message
    with pytest.raises(PageError, match="no click 99"):
        app.delete(99)
    with pytest.raises(PageError, match="two classes"):
        app.quick_map("ortho")  # one class clicked so far
    assert len(read_point_layer(tmp_path / "clicks.gpkg", CLASS_FIELD).features) == 1
    app.close()


def test_a_second_page_on_the_same_layer_is_refused_until_the_first_closes(tmp_path, table):
    raster = two_halves(tmp_path / "ortho.tif")
    layer = tmp_path / "clicks.gpkg"
    app = LabellingApp([raster], layer, table)
    # another process (a second `geoseg label`) on the same layer
    code = ("import sys; from pathlib import Path; from labelling.app import LabellingApp; "
            "from model.class_table import ClassTable; "
            f"t = ClassTable({table.names!r}, {table.colors!r}); "
            "LabellingApp([Path(sys.argv[1])], Path(sys.argv[2]), t)")
    other = subprocess.run([sys.executable, "-c", code, str(raster), str(layer)],
                           capture_output=True, text=True, cwd=os.getcwd())
    assert other.returncode != 0 and "open in another labelling page" in other.stderr
    app.close()
    LabellingApp([raster], layer, table).close()  # free again


def test_a_layer_in_another_crs_or_with_an_unknown_class_is_refused(tmp_path, table):
    raster = two_halves(tmp_path / "ortho.tif")
    app = LabellingApp([raster], tmp_path / "a.gpkg", table)
    app.add({"image": "ortho", "row": 5, "col": 5, "class_id": 0})
    app.close()
    wgs84 = two_halves(tmp_path / "wgs84.tif", crs="EPSG:4326")
    with pytest.raises(StoreError, match="EPSG:32640.*reproject"):
        LabellingApp([wgs84], tmp_path / "a.gpkg", table)
    fewer = ClassTable(("sand", "road"), ((214, 204, 163), (250, 200, 30)))
    with pytest.raises(StoreError, match="class 'water' is not in the class table"):
        LabellingApp([raster], tmp_path / "a.gpkg", fewer)
    with pytest.raises(SceneError, match="not a readable raster"):
        (tmp_path / "broken.tif").write_bytes(b"not a tiff")
        LabellingApp([tmp_path / "broken.tif"], tmp_path / "b.gpkg", table)
    with pytest.raises(SceneError, match="label rasters of one CRS"):
        LabellingApp([raster, wgs84], tmp_path / "c.gpkg", table)
    assert not (tmp_path / "a.gpkg.lock").exists()


def test_quick_map_follows_the_clicks_and_suggestions_avoid_them(tmp_path, table):
    app = LabellingApp([two_halves(tmp_path / "ortho.tif")], tmp_path / "clicks.gpkg", table)
    for row in (30, 150, 270):
        app.add({"image": "ortho", "row": row, "col": 60, "class_id": 0})
        app.add({"image": "ortho", "row": row, "col": 340, "class_id": 1})
    png, seconds, step = app.quick_map("ortho")
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    assert rgba.shape[:2] == (300, 400) and step == 1
    left, right = rgba[:, :190, :3], rgba[:, 210:, :3]
    assert (left == table.colors[0]).all(-1).mean() > 0.95
    assert (right == table.colors[1]).all(-1).mean() > 0.95
    suggested = app.suggest("ortho", 5)
    assert len(suggested) == 5
    for s in suggested:
        assert 0 <= s["row"] < 300 and 0 <= s["col"] < 400
        assert min(np.hypot(s["row"] - r, s["col"] - c) for r in (30, 150, 270) for c in (60, 340)) >= 8
    app.close()



def test_quick_map_follows_the_regions_of_the_photo_where_the_forest_is_unsure(tmp_path, table):
    """The page's map blends the forest's probabilities with their mean within the overview's
    regions: fewer class changes inside regions than the forest's own per-pixel map."""
    path = two_halves(tmp_path / "ortho.tif", left=(110, 110, 110), right=(170, 170, 170),
                      noise=60.0)
    app = LabellingApp([path], tmp_path / "clicks.gpkg", table)
    for row in (30, 150, 270):
        app.add({"image": "ortho", "row": row, "col": 60, "class_id": 0})
        app.add({"image": "ortho", "row": row, "col": 340, "class_id": 1})
    clicks = app.store.all()
    shown = app.mapper.map("ortho", clicks).classes
    per_pixel = app.mapper._forest_map("ortho", clicks)[2].argmax(0)
    regions = app.mapper._overview_regions("ortho")
    app.close()

    def mixed_regions(classes: np.ndarray) -> int:
        pairs = np.unique(np.stack([regions.ravel(), classes.ravel()]), axis=1)
        return int((np.bincount(pairs[0]) > 1).sum())

    assert mixed_regions(per_pixel) > 0  # the forest alone varies inside some regions
    assert mixed_regions(shown) < mixed_regions(per_pixel)
    assert (shown[:, :190] == 0).mean() > 0.95 and (shown[:, 210:] == 1).mean() > 0.95


TINY_TRAINING = TrainingSettings(epochs=1, steps_per_epoch=2,
                                 extra=("--batch-size", "2", "--crop-size", "128", "--threads", "1"))


def wait_for(app: LabellingApp, seconds: float = 300) -> dict:
    end = time.monotonic() + seconds
    while app.job.running and time.monotonic() < end:
        time.sleep(0.5)
    return app.job.status()


@pytest.mark.integration
def test_train_button_trains_exports_and_maps_then_that_model_maps_again(tmp_path, table):
    """A real `geoseg train` (1 epoch x 2 steps), export and `geoseg predict` in the background."""
    raster = two_halves(tmp_path / "ortho.tif")
    app = LabellingApp([raster], tmp_path / "clicks.gpkg", table, training=TINY_TRAINING)
    with pytest.raises(PageError, match="no GeoSeg model yet"):
        app.start_model_map("ortho")
    with pytest.raises(PageError, match="two classes"):
        app.start_training("ortho")
    for row in range(20, 300, 40):
        app.add({"image": "ortho", "row": row, "col": 50, "class_id": 0})
        app.add({"image": "ortho", "row": row, "col": 350, "class_id": 1})
    assert app.start_training("ortho")["state"] == "running"
    with pytest.raises(PageError, match="training is still running"):
        app.start_training("ortho")
    status = wait_for(app)
    assert status["state"] == "done", status
    assert app.model is not None and app.model.is_file()
    assert app.model.is_relative_to(tmp_path / "clicks-geoseg" / "runs")
    png, step = app.model_map("ortho")
    assert step == 1 and Image.open(io.BytesIO(png)).size == (400, 300)
    app.map_path("ortho").unlink()
    app.start_model_map("ortho")
    assert wait_for(app)["state"] == "done" and app.map_path("ortho").is_file()
    app.close()


def test_a_failing_job_is_reported_with_its_last_line_and_log(tmp_path, table):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a model")
    app = LabellingApp([two_halves(tmp_path / "ortho.tif")], tmp_path / "clicks.gpkg", table,
                       model=bogus)
    app.start_model_map("ortho")
    status = wait_for(app, 120)
    assert status["state"] == "failed" and status["error"].startswith("mapping ortho failed: ")
    assert "model.pt" in status["error"] and "\n" not in status["error"]
    assert "Traceback" not in Path(status["log"]).read_text()
    with pytest.raises(PageError, match="no model map of ortho yet"):
        app.model_map("ortho")
    app.close()


def test_suggestions_go_where_the_network_map_disputes_the_quick_map(tmp_path, table):
    import rasterio

    raster = two_halves(tmp_path / "ortho.tif")
    app = LabellingApp([raster], tmp_path / "clicks.gpkg", table)
    for row in (30, 150, 270):
        app.add({"image": "ortho", "row": row, "col": 60, "class_id": 0})
        app.add({"image": "ortho", "row": row, "col": 340, "class_id": 1})
    model = tmp_path / "model.pt"
    model.write_bytes(b"stands for an exported model")
    app.model = model
    network = np.zeros((300, 400), np.uint8)
    network[:, 200:] = 1
    network[100:200, 90:170] = 1  # the network says sand inside the water half
    app.map_path("ortho").parent.mkdir(parents=True)
    with rasterio.open(raster) as src:
        profile = src.profile | {"count": 1}
    with rasterio.open(app.map_path("ortho"), "w", **profile) as dst:
        dst.write(network[None])

    def in_block(s: dict) -> bool:
        return 100 <= s["row"] < 200 and 90 <= s["col"] < 170

    water = [s for s in app.suggest("ortho", 6) if s["class_id"] == 0]
    assert len(water) == 3 and all(in_block(s) for s in water)
    app.map_path("ortho").unlink()  # no network map: the logistic second opinion, no dispute there
    water = [s for s in app.suggest("ortho", 6) if s["class_id"] == 0]
    assert not all(in_block(s) for s in water)
    app.close()


def test_clicks_on_no_data_are_refused_and_a_qgis_layer_without_image_field_is_placed(tmp_path, table):
    import pyogrio.raw
    import rasterio
    import shapely

    raster = two_halves(tmp_path / "ortho.tif")
    with rasterio.open(raster, "r+") as dst:
        dst.nodata = 0
        bands = dst.read()
        bands[:, :, :40] = 0  # a no-data collar on the left
        dst.write(bands)
    other = two_halves(tmp_path / "east.tif")
    with rasterio.open(other, "r+") as dst:  # a second raster 1 km east
        dst.transform = dst.transform @ dst.transform.translation(2000, 0)
    xs = [pixel_centre(100, 100), (pixel_centre(50, 300)[0] + 1000, pixel_centre(50, 300)[1])]
    layer = tmp_path / "qgis.gpkg"  # drawn in QGIS: a class field, no image field
    pyogrio.raw.write(layer, np.array(shapely.to_wkb(shapely.points(xs)), dtype=object),
                      [np.array(["water", "sand"], dtype=object)], [CLASS_FIELD],
                      geometry_type="Point", crs="EPSG:32640", driver="GPKG")
    app = LabellingApp([raster, other], layer, table)
    placed = [(c["image"], int(c["row"]), int(c["col"])) for c in app.state()["clicks"]]
    assert placed == [("ortho", 100, 100), ("east", 50, 300)]
    with pytest.raises(PageError, match="no data"):
        app.add({"image": "ortho", "row": 10, "col": 20, "class_id": 0})
    first = app.state()["clicks"][0]["id"]
    with pytest.raises(PageError, match="no data"):
        app.move(first, {"row": 10, "col": 5})
    assert len(read_point_layer(layer, CLASS_FIELD).features) == 2
    app.close()
