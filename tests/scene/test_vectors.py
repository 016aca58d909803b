"""scene/vectors.py: class raster -> polygons (GeoPackage, GeoJSON, Shapefile)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from rasterio.crs import CRS

from model.class_table import ClassTable
from scene.vectors import VectorSummary, areas_m2, polygonize

PIXEL = 0.5
"""Pixel size in metres (EPSG:32640, UTM 40N, near Dubai)."""
PIXEL_AREA = PIXEL * PIXEL
ORIGIN = (300000.0, 2780000.0)
HEIGHT, WIDTH, COLLAR = 100, 120, 5
TRANSFORM = Affine(PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1])
NODATA_BLOB = (80, slice(20, 22))
"""A 2-pixel no-data hole inside the background: smaller than the sieve threshold."""
COLLAR_SPECK = (34, COLLAR)
"""A 1-pixel woodland speck in the road, against the no-data collar: the collar (2 100 pixels) is a
larger neighbour than the road (440), so a sieve that does not mask no data would give it to 255."""


def scene() -> np.ndarray:
    """(100, 120) uint8 class ids with a no-data collar, rectangles, a hole and 1-3 pixel specks.

    Regions (4-connected): background above / below the road (2), building + two diagonal
    specks (3), woodland + collar speck (2), water hole + speck (2), road + L speck (2): 11 in all.
    """
    a = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    a[COLLAR:-COLLAR, COLLAR:-COLLAR] = 0
    a[10:30, 10:40] = 1                      # building
    a[40:90, 50:110] = 2                     # woodland ...
    a[55:65, 70:85] = 3                      # ... with a water hole
    a[33:37, COLLAR:-COLLAR] = 4             # road across the scene: splits the background
    a[70, 20] = a[71, 21] = 1                # building specks (1 px each, touching at a corner)
    a[45, 55:57] = 3                         # water speck (2 px) in the woodland
    a[20, 60] = a[21, 60] = a[21, 61] = 4    # road speck (3 px, L) in the background
    a[COLLAR_SPECK] = 2                      # woodland speck (1 px) touching the collar
    a[NODATA_BLOB] = 255                     # small no-data hole
    return a


def sieved_scene() -> np.ndarray:
    """What sieving at 1 m² (4 pixels) must give: specks take their surroundings' class."""
    a = scene()
    a[70, 20] = a[71, 21] = 0
    a[45, 55:57] = 2
    a[20, 60] = a[21, 60] = a[21, 61] = 0
    a[COLLAR_SPECK] = 4
    return a


def write_raster(path: Path, classes: np.ndarray, crs: str = "EPSG:32640",
                 transform: Affine = TRANSFORM) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=classes.shape[1], height=classes.shape[0],
                       count=1, dtype="uint8", crs=crs, transform=transform, nodata=255) as dst:
        dst.write(classes, 1)
    return path


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "classes.tif", scene())


@pytest.fixture
def table() -> ClassTable:
    return ClassTable(names=("background", "building", "woodland", "water", "road"),
                      colors=((214, 204, 163), (255, 0, 0), (0, 128, 0), (0, 0, 255), (90, 90, 90)),
                      name="test")


def read_features(path: Path) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """(meta, (N,) shapely geometries, {field: (N,) values}) of the only layer of ``path``."""
    meta, _, wkb, columns = pyogrio.raw.read(path)
    return meta, shapely.from_wkb(wkb), dict(zip(meta["fields"], columns))


def expected_areas(classes: np.ndarray, table: ClassTable) -> dict[str, float]:
    return {name: float(np.count_nonzero(classes == k)) * PIXEL_AREA for k, name in enumerate(table.names)}


def inner_box() -> shapely.Polygon:
    """The scene inside the collar, in EPSG:32640 metres."""
    x0, y0 = ORIGIN[0] + COLLAR * PIXEL, ORIGIN[1] - (HEIGHT - COLLAR) * PIXEL
    return shapely.box(x0, y0, x0 + (WIDTH - 2 * COLLAR) * PIXEL, y0 + (HEIGHT - 2 * COLLAR) * PIXEL)


def pixel_centre(row: int, col: int) -> shapely.Point:
    x, y = TRANSFORM @ (col + 0.5, row + 0.5)
    return shapely.Point(x, y)


def test_gpkg_has_one_layer_with_fields_and_raster_crs(raster: Path, table: ClassTable, tmp_path: Path):
    out = tmp_path / "scene.gpkg"  # layer name differs from the file name
    summary = polygonize(raster, out, table)
    layers = pyogrio.list_layers(out)
    assert [tuple(row) for row in layers] == [("landcover", "Polygon")]
    info = pyogrio.read_info(out, layer="landcover")
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2"]
    assert info["crs"] == "EPSG:32640"
    assert info["features"] == 11  # 4-connected: the diagonal building specks are two polygons
    assert summary == VectorSummary(out, "landcover", "GPKG", 11, "EPSG:32640", summary.area_m2)
    _, geoms, fields = read_features(out)
    assert set(shapely.get_type_id(geoms)) == {3}  # Polygon
    woodland = geoms[(fields["class_id"] == 2)][np.argmax(fields["area_m2"][fields["class_id"] == 2])]
    assert shapely.get_num_interior_rings(woodland) == 2  # the water hole and the water speck


def test_areas_match_pixel_counts_and_nodata_is_left_out(raster: Path, table: ClassTable, tmp_path: Path):
    out = tmp_path / "landcover.gpkg"
    summary = polygonize(raster, out, table)
    _, geoms, fields = read_features(out)
    assert set(fields["class_id"].tolist()) <= set(range(table.num_classes))  # no 255 features
    assert [table.names[i] for i in fields["class_id"]] == fields["class_name"].tolist()
    expected = expected_areas(scene(), table)
    for k, name in enumerate(table.names):
        got = float(fields["area_m2"][fields["class_id"] == k].sum())
        assert got == pytest.approx(expected[name], rel=0.01)
        assert summary.area_m2[name] == pytest.approx(expected[name], rel=0.01)
    assert np.allclose(fields["area_m2"], shapely.area(geoms))  # metres: unit factor 1
    covered = shapely.union_all(geoms)
    assert covered.area == pytest.approx(np.count_nonzero(scene() != 255) * PIXEL_AREA)
    assert covered.difference(inner_box()).area == 0.0  # nothing on the collar
    assert not covered.intersects(pixel_centre(NODATA_BLOB[0], NODATA_BLOB[1].start))


def test_sieve_removes_specks_and_leaves_nodata_alone(raster: Path, table: ClassTable, tmp_path: Path):
    plain = polygonize(raster, tmp_path / "plain.gpkg", table)
    out = tmp_path / "sieved.gpkg"
    sieved = polygonize(raster, out, table, min_area_m2=1.0)  # 4 pixels of 0.25 m²
    assert (plain.features, sieved.features) == (11, 6)
    assert sieved.area_m2 == pytest.approx(expected_areas(sieved_scene(), table))
    assert sieved.area_m2["water"] == pytest.approx(plain.area_m2["water"] - 2 * PIXEL_AREA)
    assert sum(sieved.area_m2.values()) == pytest.approx(sum(plain.area_m2.values()))
    _, geoms, fields = read_features(out)
    covered = shapely.union_all(geoms)
    assert covered.difference(inner_box()).area == 0.0
    assert not covered.intersects(pixel_centre(NODATA_BLOB[0], NODATA_BLOB[1].start))
    road = shapely.union_all(geoms[fields["class_id"] == 4])
    assert road.contains(pixel_centre(*COLLAR_SPECK))  # the speck went to its valid neighbour


def test_geojson_is_lonlat_with_the_same_areas(raster: Path, table: ClassTable, tmp_path: Path):
    gpkg = polygonize(raster, tmp_path / "landcover.gpkg", table)
    out = tmp_path / "landcover.geojson"
    summary = polygonize(raster, out, table)
    assert (summary.driver, summary.crs, summary.features) == ("GeoJSON", "EPSG:4326", 11)
    assert pyogrio.read_info(out)["crs"] == "EPSG:4326"
    _, geoms, fields = read_features(out)
    lon0, lat0, lon1, lat1 = shapely.total_bounds(geoms)
    assert 54.9 < lon0 < lon1 < 55.1 and 25.0 < lat0 < lat1 < 25.2
    assert summary.area_m2 == pytest.approx(gpkg.area_m2)
    _, _, gpkg_fields = read_features(tmp_path / "landcover.gpkg")
    assert sorted(fields["area_m2"]) == pytest.approx(sorted(gpkg_fields["area_m2"]))
    back = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32640", always_xy=True)
    utm = shapely.transform(geoms, lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
    assert np.allclose(shapely.total_bounds(utm), inner_box().bounds, atol=0.05)


def test_shapefile_keeps_raster_crs_and_fields(raster: Path, table: ClassTable, tmp_path: Path):
    out = tmp_path / "landcover.shp"
    summary = polygonize(raster, out, table)
    info = pyogrio.read_info(out)
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2"]
    assert (info["crs"], info["features"], summary.layer) == ("EPSG:32640", 11, "landcover")
    assert summary.area_m2 == pytest.approx(expected_areas(scene(), table))


def test_unknown_extension_lists_accepted_ones(raster: Path, table: ClassTable, tmp_path: Path):
    with pytest.raises(ValueError, match=r"\.kml") as err:
        polygonize(raster, tmp_path / "landcover.kml", table)
    message = str(err.value)
    assert "\n" not in message
    assert all(ext in message for ext in (".gpkg", ".geojson", ".json", ".shp"))
    assert not (tmp_path / "landcover.kml").exists()


def test_existing_output_needs_overwrite(raster: Path, table: ClassTable, tmp_path: Path):
    out = tmp_path / "landcover.gpkg"
    polygonize(raster, out, table)
    with pytest.raises(FileExistsError, match="overwrite"):
        polygonize(raster, out, table, min_area_m2=1.0)
    assert pyogrio.read_info(out)["features"] == 11  # untouched
    summary = polygonize(raster, out, table, min_area_m2=1.0, overwrite=True)
    assert summary.features == pyogrio.read_info(out)["features"] == 6
    assert len(pyogrio.list_layers(out)) == 1


def test_geographic_crs_gives_geodesic_areas_and_refuses_min_area(table: ClassTable, tmp_path: Path):
    step = 1e-5  # degrees, about 1.0 x 1.1 m near 25 N
    transform = Affine(step, 0.0, 55.0, 0.0, -step, 25.1)
    classes = np.full((20, 30), 255, dtype=np.uint8)
    classes[2:18, 2:28] = 1
    classes[6:10, 10:15] = 255  # a no-data hole: the polygon has an interior ring
    raster = write_raster(tmp_path / "lonlat.tif", classes, crs="EPSG:4326", transform=transform)
    summary = polygonize(raster, tmp_path / "lonlat.gpkg", table)
    x0, y1 = transform @ (2, 2)
    x1, y0 = transform @ (28, 18)
    hx0, hy1 = transform @ (10, 6)
    hx1, hy0 = transform @ (15, 10)
    geod = pyproj.Geod(ellps="WGS84")
    box, _ = geod.geometry_area_perimeter(shapely.box(x0, y0, x1, y1))
    hole, _ = geod.geometry_area_perimeter(shapely.box(hx0, hy0, hx1, hy1))
    assert summary.area_m2["building"] == pytest.approx(box - hole, rel=1e-6)
    assert 400 < summary.area_m2["building"] < 500  # 16 x 26 - 4 x 5 pixels of about 1.1 m²
    with pytest.raises(ValueError, match="projected CRS"):
        polygonize(raster, tmp_path / "sieved.gpkg", table, min_area_m2=1.0)


def test_ids_outside_the_table_are_refused(table: ClassTable, tmp_path: Path):
    classes = scene()
    classes[50, 50] = 7
    raster = write_raster(tmp_path / "bad.tif", classes)
    with pytest.raises(ValueError, match="value 7"):
        polygonize(raster, tmp_path / "bad.gpkg", table)


def test_cloud_optimized_geotiff_input_gives_the_same_polygons(raster: Path, table: ClassTable,
                                                               tmp_path: Path):
    cog = tmp_path / "classes.cog.tif"
    rasterio.shutil.copy(raster, cog, driver="COG", blocksize=64)
    with rasterio.open(cog) as src:
        assert src.driver == "GTiff" and src.profile.get("tiled")
    plain = polygonize(raster, tmp_path / "plain.gpkg", table)
    assert polygonize(cog, tmp_path / "cog.gpkg", table).area_m2 == plain.area_m2


def test_geodesic_area_does_not_depend_on_ring_orientation():
    shell = [(55.0, 25.0), (55.001, 25.0), (55.001, 25.001), (55.0, 25.001)]  # counter-clockwise
    hole = [(55.0002, 25.0002), (55.0004, 25.0002), (55.0004, 25.0004), (55.0002, 25.0004)]  # same way
    geod = pyproj.Geod(ellps="WGS84")
    expected = geod.polygon_area_perimeter(*zip(*shell))[0] - geod.polygon_area_perimeter(*zip(*hole))[0]
    polygons = np.array([shapely.Polygon(shell, [hole]), shapely.Polygon(shell[::-1], [hole])])
    assert areas_m2(polygons, CRS.from_epsg(4326)) == pytest.approx([expected, expected], rel=1e-9)
