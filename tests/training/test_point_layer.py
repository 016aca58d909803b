"""Point layers (GPKG / SHP / GeoJSON / CSV) read, classified and matched to rasters.

The fixtures write a small GeoTIFF in UTM zone 40N (EPSG:32640, 0.5 m pixels) with a nodata
corner, and the same pixels as a plain PNG; point layers are written with pyogrio from pixel
centres computed here, so every expected (row, col, class) is known by construction.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import rasterio.io
import shapely
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.windows import Window

from model.class_table import ClassTable
from training.points.layer import (
    DEFAULT_PALETTE,
    MatchResult,
    PointLayer,
    PointLayerError,
    Reason,
    default_colors,
    match_points,
    read_point_layer,
    require_usable,
    resolve_classes,
)

UTM = "EPSG:32640"
X0, Y0, RES = 300000.0, 2780000.0, 0.5  # top-left corner of the raster, metres
W, H = 40, 30
NODATA_ROWS, NODATA_COLS = slice(20, 30), slice(0, 10)  # bottom-left corner is nodata (0)
TO_LONLAT = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
LANDCOVER = ClassTable.load()

# (row, col, class name, fraction of a pixel right, fraction down): pixel positions off-centre on
# purpose, so a half-pixel slip or a swap of row and column changes the answer.
SITES = [(3, 4, "water", 0.5, 0.5), (17, 33, "road", 0.2, 0.8), (29, 39, "building", 0.9, 0.1),
         (0, 0, "woodland", 0.5, 0.5), (11, 25, "Water", 0.05, 0.95)]
EXPECTED = np.array([[3, 4, 3], [17, 33, 4], [29, 39, 1], [0, 0, 2], [11, 25, 3]], dtype=np.int64)


def _pixels() -> np.ndarray:
    """(3, H, W) uint8 in 1..255, with the nodata corner set to 0 in every band."""
    bands = np.random.default_rng(0).integers(1, 256, (3, H, W), dtype=np.uint8)
    bands[:, NODATA_ROWS, NODATA_COLS] = 0
    return bands


def _write_tif(path: Path, bands: np.ndarray, x0: float = X0, nodata: float | None = 0, **kw) -> Path:
    count, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=bands.dtype,
                       crs=UTM, transform=Affine(RES, 0.0, x0, 0.0, -RES, Y0), nodata=nodata, **kw) as dst:
        dst.write(bands)
    return path


@pytest.fixture
def utm_tif(tmp_path: Path) -> Path:
    return _write_tif(tmp_path / "scene.tif", _pixels())


def _utm(row: float, col: float) -> tuple[float, float]:
    """Map x, y (metres, EPSG:32640) of the pixel position (col, row) of the test raster."""
    return X0 + col * RES, Y0 - row * RES


def _site_utm(sites: list[tuple[int, int, str, float, float]]) -> np.ndarray:
    return np.array([_utm(r + fy, c + fx) for r, c, _, fx, fy in sites])


def _site_lonlat(sites: list[tuple[int, int, str, float, float]]) -> np.ndarray:
    xy = _site_utm(sites)
    lon, lat = TO_LONLAT.transform(xy[:, 0], xy[:, 1])
    return np.stack([lon, lat], axis=1)


def _write_layer(path: Path, xy: np.ndarray, crs: str, fields: dict[str, list], driver: str | None = None,
                 geoms: np.ndarray | None = None, geometry_type: str = "Point") -> Path:
    """A layer written by pyogrio: points at ``xy`` (N, 2) in ``crs`` (or WKB ``geoms``), one field each."""
    if geoms is None:
        geoms = np.array(shapely.to_wkb(shapely.points(xy)), dtype=object)
    data = [np.array(v, dtype=object if any(isinstance(x, str) or x is None for x in v) else None)
            for v in fields.values()]
    pyogrio.raw.write(path, geoms, data, list(fields), geometry_type=geometry_type, crs=crs, driver=driver)
    return path


def _match(path: Path, rasters: list[Path], table: ClassTable | None = None,
           csv_crs: str | None = None) -> tuple[PointLayer, ClassTable, MatchResult]:
    layer = read_point_layer(path, csv_crs=csv_crs)
    table, mapping = resolve_classes(layer.values(), table)
    return layer, table, match_points(layer, rasters, table, mapping)


# -------------------------------------------------------------------------------------- reprojection


def test_lonlat_geopackage_lands_on_the_right_utm_pixel(tmp_path: Path, utm_tif: Path) -> None:
    row, col = 12, 27
    lon, lat = TO_LONLAT.transform(*_utm(row + 0.5, col + 0.5))
    gpkg = _write_layer(tmp_path / "points.gpkg", np.array([[lon, lat]]), "EPSG:4326",
                        {"landcover": ["water"]})
    layer, table, result = _match(gpkg, [utm_tif])
    assert layer.crs is not None and layer.crs.to_epsg() == 4326
    assert table.name == "landcover.ai"
    np.testing.assert_array_equal(result.points[0], [[row, col, 3]])
    # the point comes back within half a pixel of the pixel centre it was made from
    back = Transformer.from_crs(layer.crs, UTM, always_xy=True)
    x, y = back.transform(layer.features[0].x, layer.features[0].y)
    assert abs((x - X0) / RES - (col + 0.5)) < 0.5 and abs((Y0 - y) / RES - (row + 0.5)) < 0.5
    assert result.rejected == ()


def test_off_centre_lonlat_points_keep_their_pixel(tmp_path: Path, utm_tif: Path) -> None:
    names = [s[2] for s in SITES]
    gpkg = _write_layer(tmp_path / "p.gpkg", _site_lonlat(SITES), "EPSG:4326", {"landcover": names})
    _, _, result = _match(gpkg, [utm_tif])
    np.testing.assert_array_equal(result.points[0], EXPECTED)
    np.testing.assert_array_equal(result.feature_ids[0], [1, 2, 3, 4, 5])  # GeoPackage fids from 1


# -------------------------------------------------------------------------------------- rejections


def test_bad_points_are_reported_by_feature_id_and_good_ones_kept(tmp_path: Path, utm_tif: Path) -> None:
    xy = np.array([_utm(5.5, 5.5),            # fid 1: road, usable
                   (X0 - 100.0, Y0 + 100.0),  # fid 2: outside
                   _utm(25.5, 3.5),           # fid 3: on the nodata corner
                   _utm(6.5, 6.5),            # fid 4: unknown class
                   _utm(7.5, 7.5),            # fid 5: null class
                   _utm(8.5, 8.5),            # fid 6: blank class
                   _utm(2.5, 30.5)])          # fid 7: building, usable
    values = ["road", "water", "woodland", "forest", None, "  ", "Building"]
    gpkg = _write_layer(tmp_path / "bad.gpkg", xy, UTM, {"landcover": values})
    _, _, result = _match(gpkg, [utm_tif], LANDCOVER)
    np.testing.assert_array_equal(result.points[0], [[5, 5, 4], [2, 30, 1]])
    np.testing.assert_array_equal(result.feature_ids[0], [1, 7])
    assert [(r.feature_id, r.reason) for r in result.rejected] == [
        (2, Reason.OUTSIDE), (3, Reason.NODATA), (4, Reason.UNKNOWN_CLASS),
        (5, Reason.EMPTY_CLASS), (6, Reason.EMPTY_CLASS)]
    report = result.report().splitlines()
    assert len(report) == 6
    assert report[2].startswith(f"{gpkg}: feature 4: unknown class: 'forest'")
    assert report[-1].endswith("2 usable (scene.tif: 2); rejected: 1 outside every raster, 1 on nodata, "
                               "1 unknown class, 2 empty class field")
    assert require_usable(result) is result


def test_no_usable_point_is_an_error_with_the_counts(tmp_path: Path, utm_tif: Path) -> None:
    xy = np.array([(X0 - 100.0, Y0), _utm(25.5, 3.5), _utm(1.5, 1.5)])
    gpkg = _write_layer(tmp_path / "none.gpkg", xy, UTM, {"landcover": ["water", "water", ""]})
    _, _, result = _match(gpkg, [utm_tif], LANDCOVER)
    assert result.num_usable == 0
    with pytest.raises(PointLayerError, match=r"^no usable points: 3 in .*none\.gpkg \(1 outside every "
                                              r"raster, 1 on nodata, 1 empty class field\)"):
        require_usable(result)


def test_alpha_band_and_internal_mask_count_as_nodata(tmp_path: Path) -> None:
    rgba = np.concatenate([_pixels(), np.full((1, H, W), 255, dtype=np.uint8)])
    rgba[3, 0:5, 0:5] = 0
    alpha_tif = _write_tif(tmp_path / "alpha.tif", rgba, nodata=None, photometric="RGB", alpha="YES")
    masked_tif = _write_tif(tmp_path / "masked.tif", _pixels(), nodata=None)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked_tif, "r+") as dst:
        mask = np.full((H, W), 255, dtype=np.uint8)
        mask[0:5, 0:5] = 0
        dst.write_mask(mask)
    xy = np.array([_utm(2.5, 2.5), _utm(10.5, 10.5)])
    gpkg = _write_layer(tmp_path / "p.gpkg", xy, UTM, {"class": ["water", "road"]})
    for tif in (alpha_tif, masked_tif):
        _, _, result = _match(gpkg, [tif])
        np.testing.assert_array_equal(result.points[0], [[10, 10, 4]])
        assert [(r.feature_id, r.reason) for r in result.rejected] == [(1, Reason.NODATA)]


# -------------------------------------------------------------------------------------- formats


def _feature_collection(path: Path, field: str, names: list[str], xy: np.ndarray,
                        crs_urn: str | None) -> Path:
    """A hand-written GeoJSON; ``crs_urn`` adds a pre-RFC 7946 ``crs`` member."""
    features = [{"type": "Feature", "id": k, "properties": {field: n},
                 "geometry": {"type": "Point", "coordinates": [x, y]}}
                for k, (n, (x, y)) in enumerate(zip(names, xy.tolist()))]
    doc: dict = {"type": "FeatureCollection", "features": features}
    if crs_urn is not None:
        doc["crs"] = {"type": "name", "properties": {"name": crs_urn}}
    path.write_text(json.dumps(doc))
    return path


def test_every_format_gives_the_same_points(tmp_path: Path, utm_tif: Path) -> None:
    names = [s[2] for s in SITES]
    utm_xy, lonlat = _site_utm(SITES), _site_lonlat(SITES)
    gpkg = _write_layer(tmp_path / "p.gpkg", lonlat, "EPSG:4326", {"landcover": names})
    geojson = _write_layer(tmp_path / "p.geojson", lonlat, "EPSG:4326", {"landcover": names},
                           driver="GeoJSON")
    rfc = _feature_collection(tmp_path / "rfc7946.geojson", "landcover", names, lonlat, None)  # lon/lat
    legacy = _feature_collection(tmp_path / "legacy.geojson", "type", names, utm_xy,
                                 "urn:ogc:def:crs:EPSG::32640")  # older GeoJSON with a `crs` member
    shp = _write_layer(tmp_path / "p.shp", utm_xy, UTM, {"Class": names})  # upper case: auto-detected
    map_csv = tmp_path / "map.csv"
    rows = [f"{x!r},{y!r},{n}\n" for (x, y), n in zip(utm_xy.tolist(), names)]
    map_csv.write_text("x,y,landcover\n" + "".join(rows))
    png = tmp_path / "tiles" / "scene.png"
    png.parent.mkdir()
    Image.fromarray(np.moveaxis(_pixels(), 0, -1)).save(png)
    pixel_csv = tmp_path / "pixels.csv"
    pixel_csv.write_text("image,x,y,landcover\n"
                         + "".join(f"tiles/scene.png,{c + fx},{r + fy},{n}\n" for r, c, n, fx, fy in SITES))

    cases = [(gpkg, [utm_tif], None), (geojson, [utm_tif], None), (rfc, [utm_tif], None),
             (legacy, [utm_tif], None), (shp, [utm_tif], None), (map_csv, [utm_tif], UTM),
             (pixel_csv, [png], None)]
    for path, rasters, csv_crs in cases:
        _, table, result = _match(path, rasters, csv_crs=csv_crs)
        assert table.name == "landcover.ai", path
        np.testing.assert_array_equal(result.points[0], EXPECTED, err_msg=str(path))
        assert result.rejected == (), path
    shp_layer = read_point_layer(shp)
    assert shp_layer.class_field == "Class" and [f.fid for f in shp_layer.features] == [0, 1, 2, 3, 4]
    csv_layer = read_point_layer(pixel_csv)
    assert csv_layer.pixel_coordinates and [f.fid for f in csv_layer.features] == [2, 3, 4, 5, 6]


def test_csv_pixel_rows_outside_their_image_are_rejected_by_line(tmp_path: Path) -> None:
    png = tmp_path / "tile.png"
    Image.fromarray(np.moveaxis(_pixels(), 0, -1)).save(png)
    pixel_csv = tmp_path / "p.csv"
    pixel_csv.write_text("image,x,y,class\ntile.png,1,2,water\ntile.png,40,2,water\nother.png,1,1,road\n"
                         ",1,1,road\n")
    _, _, result = _match(pixel_csv, [png])
    np.testing.assert_array_equal(result.points[0], [[2, 1, 3]])
    assert [(r.feature_id, r.reason) for r in result.rejected] == [
        (3, Reason.OUTSIDE), (4, Reason.UNKNOWN_IMAGE), (5, Reason.UNKNOWN_IMAGE)]
    assert result.report().splitlines()[0].startswith(f"{pixel_csv}:3: outside every raster")


def test_point_goes_to_the_first_raster_with_data_there(tmp_path: Path, utm_tif: Path) -> None:
    wider = np.random.default_rng(1).integers(1, 256, (3, H, W + 20), dtype=np.uint8)
    second = _write_tif(tmp_path / "second.tif", wider)  # same origin, no nodata, 20 columns wider
    xy = np.array([_utm(1.5, 1.5), _utm(25.5, 3.5), _utm(4.5, 50.5), _utm(40.5, 3.5)])
    gpkg = _write_layer(tmp_path / "p.gpkg", xy, UTM, {"label": ["water", "road", "building", "water"]})
    _, _, result = _match(gpkg, [utm_tif, second])
    np.testing.assert_array_equal(result.points[0], [[1, 1, 3]])                # in both: the first
    np.testing.assert_array_equal(result.points[1], [[25, 3, 4], [4, 50, 1]])  # first is nodata / too small
    assert [(r.feature_id, r.reason) for r in result.rejected] == [(4, Reason.OUTSIDE)]


def test_image_attribute_picks_the_raster_in_map_coordinates(tmp_path: Path, utm_tif: Path) -> None:
    (tmp_path / "b").mkdir()
    shifted = _write_tif(tmp_path / "b" / "east.tif", _pixels(), x0=X0 + 10 * RES)
    xy = np.array([_utm(1.5, 12.5), _utm(1.5, 12.5), _utm(1.5, 12.5)])
    gpkg = _write_layer(tmp_path / "p.gpkg", xy, UTM, {"landcover": ["water"] * 3,
                                                       "image": ["b/east.tif", None, "missing.tif"]})
    _, _, result = _match(gpkg, [utm_tif, shifted])
    np.testing.assert_array_equal(result.points[1], [[1, 2, 3]])  # the named raster, though both hold it
    np.testing.assert_array_equal(result.points[0], [[1, 12, 3]])  # no image value: first raster
    assert [(r.feature_id, r.reason) for r in result.rejected] == [(3, Reason.UNKNOWN_IMAGE)]


def test_only_tiny_mask_windows_are_read_from_a_huge_raster(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.tif"  # 20000 x 20000 pixels, sparse: only one 256 x 256 block written
    with rasterio.open(big, "w", driver="GTiff", width=20000, height=20000, count=1, dtype="uint8", nodata=0,
                       crs=UTM, transform=Affine(RES, 0.0, X0, 0.0, -RES, Y0), tiled=True, blockxsize=256,
                       blockysize=256, sparse_ok=True) as dst:
        dst.write(np.full((1, 256, 256), 9, dtype=np.uint8), window=Window(512, 512, 256, 256))
    windows: list[Window] = []
    original = rasterio.io.DatasetReader.dataset_mask

    def spy(self, *args, window=None, **kwargs):
        assert window is not None, "dataset_mask read without a window"
        windows.append(window)
        return original(self, *args, window=window, **kwargs)

    def forbidden(self, *args, **kwargs):
        raise AssertionError("band data read")

    monkeypatch.setattr(rasterio.io.DatasetReader, "dataset_mask", spy)
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", forbidden)
    xy = np.array([_utm(600.5, 700.5), _utm(15000.5, 19000.5), _utm(600.5, 700.5)])
    gpkg = _write_layer(tmp_path / "p.gpkg", xy, UTM, {"landcover": ["road", "water", "water"]})
    _, _, result = _match(gpkg, [big])
    np.testing.assert_array_equal(result.points[0], [[600, 700, 4], [600, 700, 3]])
    assert [(r.feature_id, r.reason) for r in result.rejected] == [(2, Reason.NODATA)]
    assert windows and all(w.width * w.height <= 1 for w in windows)
    assert len(windows) == 2  # one per distinct pixel


# -------------------------------------------------------------------------------------- classes


def test_landcoverai_names_and_ids_map_to_its_ids() -> None:
    table, mapping = resolve_classes(["Water", "ROAD", "water", None, "background"], None)
    assert table == LANDCOVER
    assert mapping == {"Water": 3, "ROAD": 4, "water": 3, "background": 0}
    table, mapping = resolve_classes([0, 4, "2"], None)
    assert table == LANDCOVER and mapping == {0: 0, 4: 4, "2": 2}


def test_unknown_names_build_a_sorted_table_with_the_default_palette() -> None:
    table, mapping = resolve_classes(["sea", "Sand", "palm", "sand", None, "sea"], None)
    assert table.names == ("palm", "Sand", "sea")
    assert table.colors == DEFAULT_PALETTE[:3]
    assert mapping == {"sea": 2, "Sand": 1, "palm": 0, "sand": 1}
    colors = default_colors(30)
    assert len(set(colors)) == 30 and colors[:20] == DEFAULT_PALETTE


def test_a_given_table_is_honoured_by_name_and_id() -> None:
    given = ClassTable(names=("sea", "sand", "palm"), colors=((0, 0, 255), (255, 255, 0), (0, 255, 0)))
    table, mapping = resolve_classes(["SEA", "palm", 1, "2", 7, "forest", "water"], given)
    assert table is given
    assert mapping == {"SEA": 0, "palm": 2, 1: 1, "2": 2}  # 7, forest, water: not in the table


def test_ids_outside_landcoverai_need_a_table() -> None:
    with pytest.raises(PointLayerError, match="pass a class table"):
        resolve_classes([1, 7], None)


def test_unknown_id_of_a_given_table_is_rejected(tmp_path: Path, utm_tif: Path) -> None:
    gpkg = _write_layer(tmp_path / "ids.gpkg", np.array([_utm(1.5, 1.5), _utm(2.5, 2.5)]), UTM,
                        {"class_id": [3, 9]})
    layer, _, result = _match(gpkg, [utm_tif], LANDCOVER)
    assert layer.class_field == "class_id" and layer.values() == [3, 9]
    np.testing.assert_array_equal(result.points[0], [[1, 1, 3]])
    assert [(r.feature_id, r.reason) for r in result.rejected] == [(2, Reason.UNKNOWN_CLASS)]


# -------------------------------------------------------------------------------------- reading errors


def test_class_field_is_detected_or_named(tmp_path: Path) -> None:
    xy = np.array([_utm(1.5, 1.5)])
    one = _write_layer(tmp_path / "one.gpkg", xy, UTM, {"note": ["x"], "Type": ["water"]})
    assert read_point_layer(one).class_field == "Type"
    assert read_point_layer(one, class_field="NOTE").values() == ["x"]
    two = _write_layer(tmp_path / "two.gpkg", xy, UTM, {"class": ["water"], "label": ["road"]})
    with pytest.raises(PointLayerError, match=r"several class fields \(class, label\) among the fields"):
        read_point_layer(two)
    assert read_point_layer(two, class_field="label").values() == ["road"]
    none = _write_layer(tmp_path / "none.gpkg", xy, UTM, {"kind": ["water"]})
    with pytest.raises(PointLayerError, match="no class field among the fields kind"):
        read_point_layer(none)
    with pytest.raises(PointLayerError, match="no class field 'cls'; the layer's fields are kind"):
        read_point_layer(none, class_field="cls")


def test_non_points_and_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    polygon = np.array([shapely.to_wkb(shapely.box(X0, Y0 - 5, X0 + 5, Y0))], dtype=object)
    poly = _write_layer(tmp_path / "poly.gpkg", np.zeros((1, 2)), UTM, {"class": ["water"]},
                        geoms=polygon, geometry_type="Polygon")
    cases = {
        poly: "feature 1 is a Polygon; the layer must hold points",
        tmp_path / "junk.gpkg": "not a readable point layer",
        tmp_path / "missing.gpkg": "no such file",
    }
    (tmp_path / "junk.gpkg").write_text("not a geopackage\n")
    for path, message in cases.items():
        with pytest.raises(PointLayerError, match=message) as info:
            read_point_layer(path)
        assert "\n" not in str(info.value)


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    no_crs = tmp_path / "nocrs.csv"
    no_crs.write_text("x,y,class\n1,2,water\n")
    with pytest.raises(PointLayerError, match="need a CRS"):
        read_point_layer(no_crs)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,class\n1,2,water\n1,north,water\n")
    with pytest.raises(PointLayerError, match=r"bad\.csv:3: x and y must be numbers"):
        read_point_layer(bad, csv_crs=UTM)
    with pytest.raises(PointLayerError, match="not a CRS"):
        read_point_layer(bad, csv_crs="EPSG:99999999")


def test_every_unreadable_row_and_non_point_feature_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,class\n1,north,water\n1,2,water\ninf,2,road\n")
    with pytest.raises(PointLayerError, match=r"^2 rows with unreadable coordinates: .*bad\.csv:2: x and y "
                                              r"must be numbers.*; .*bad\.csv:4: x and y must be finite"):
        read_point_layer(bad, csv_crs=UTM)
    shapes = [shapely.box(X0, Y0 - 5, X0 + 5, Y0), shapely.points(X0, Y0),
              shapely.linestrings([[X0, Y0], [X0 + 1, Y0]])]
    mixed = _write_layer(tmp_path / "mixed.gpkg", np.zeros((3, 2)), UTM, {"class": ["water"] * 3},
                         geoms=np.array(shapely.to_wkb(shapes), dtype=object), geometry_type="Unknown")
    with pytest.raises(PointLayerError, match=r"^2 features that are not points: .*feature 1 is a Polygon; "
                                              r".*feature 3 is a LineString; the layer must hold points") as info:
        read_point_layer(mixed)
    assert "\n" not in str(info.value)


def test_a_geojson_may_declare_pixel_coordinates(tmp_path: Path) -> None:
    """``"geoseg:coordinates": "pixel"``: the points are pixels of the image they name, whatever
    the rasters' georeferencing; a point naming no image cannot be placed."""
    png = tmp_path / "tile.png"
    Image.fromarray(np.moveaxis(_pixels(), 0, -1)).save(png)
    tif = _write_tif(tmp_path / "scene.tif", _pixels())
    features = [{"type": "Feature", "properties": {"class": name, "image": image},
                 "geometry": {"type": "Point", "coordinates": [x, y]}}
                for name, image, x, y in (("water", "tile", 4.5, 3.5), ("road", "scene.tif", 33.2, 17.9),
                                          ("road", None, 1, 1))]
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "geoseg:coordinates": "pixel",
                                "features": features}))
    layer, _, result = _match(path, [png, tif])
    assert layer.pixel_coordinates and layer.crs is None
    assert result.points[0].tolist() == [[3, 4, 3]] and result.points[1].tolist() == [[17, 33, 4]]
    assert [(r.feature_id, r.reason) for r in result.rejected] == [(2, Reason.UNKNOWN_IMAGE)]


def test_points_clicked_in_qgis_on_a_plain_png_land_on_their_pixels(tmp_path: Path) -> None:
    """QGIS shows an image without georeferencing with rows at y = -row: a layer drawn there
    (an ``image`` attribute naming the tile) reaches the same pixels as row, column pixels."""
    Image.fromarray(np.moveaxis(_pixels(), 0, -1)).save(tmp_path / "tile_07.png")
    xy = np.array([[4.5, -3.5], [33.2, -17.9], [39.9, -29.1]])
    path = _write_layer(tmp_path / "clicks.gpkg", xy, "EPSG:3857",
                        {"class": ["water", "road", "building"], "image": ["tile_07"] * 3})
    _, _, result = _match(path, [tmp_path / "tile_07.png"])
    assert not result.rejected
    assert result.points[0].tolist() == [[3, 4, 3], [17, 33, 4], [29, 39, 1]]
