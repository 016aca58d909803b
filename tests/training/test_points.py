import json

import numpy as np
import pytest
from PIL import Image

from model.class_table import IGNORE_INDEX
from training.points.files import (
    SHOWN_PROBLEMS,
    PointFileError,
    georeferencing,
    points_to_label,
    read_point_annotations,
    read_sparse_png,
    simulate_points,
)
from training.points.options import PointInputError


def _mask() -> np.ndarray:
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:25, 5:30] = 2          # 500 woodland pixels
    mask[30:32, 40:43] = 3        # 6 water pixels: fewer than N
    mask[0, 0] = IGNORE_INDEX
    return mask


def refused(path, text: str, table, pattern: str) -> None:
    """Writing ``text`` to ``path`` gives a point file that is refused with ``pattern``."""
    path.write_text(text)
    with pytest.raises(PointFileError, match=pattern):
        read_point_annotations(path, table, SIZES)


@pytest.mark.parametrize("n", [1, 10, 50])
def test_simulation_gives_exactly_n_points_per_present_class(n):
    mask = _mask()
    points = simulate_points(mask, n, seed=4)
    counts = {c: int((points[:, 2] == c).sum()) for c in np.unique(points[:, 2])}
    assert counts == {0: n, 2: n, 3: min(n, 6)}
    assert np.all(mask[points[:, 0], points[:, 1]] == points[:, 2])  # each point on its class
    assert len({(y, x) for y, x, _ in points.tolist()}) == len(points)  # no pixel twice


def test_simulation_is_reproducible_and_seed_dependent():
    mask = _mask()
    np.testing.assert_array_equal(simulate_points(mask, 10, [1, 2]), simulate_points(mask, 10, [1, 2]))
    assert not np.array_equal(simulate_points(mask, 10, 1), simulate_points(mask, 10, 2))


def test_sparse_label_holds_points_and_255_elsewhere():
    points = simulate_points(_mask(), 10, 0)
    label = points_to_label(points, (40, 50))
    assert (label != IGNORE_INDEX).sum() == len(points)
    np.testing.assert_array_equal(label[points[:, 0], points[:, 1]], points[:, 2])


SIZES = {"a": (20, 30), "dir/b": (10, 10)}


def test_csv_reader_accepts_valid_file(tmp_path, table):
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,class\na.jpg,3,4,building\na.jpg,29,19,2\ndir/b.png,0,9,road\n")
    points = read_point_annotations(path, table, SIZES)
    np.testing.assert_array_equal(points["a"], [[4, 3, 1], [19, 29, 2]])
    np.testing.assert_array_equal(points["dir/b"], [[9, 0, 4]])


@pytest.mark.parametrize("row, message", [
    ("a.jpg,30,4,building", "outside image"),
    ("a.jpg,3,4,lava", "unknown class"),
    ("a.jpg,3,4,9", "class id 9"),
    ("zzz.jpg,3,4,road", "not in the dataset"),
    ("a.jpg,three,4,road", "must be numbers"),
])
def test_csv_reader_names_the_bad_line(tmp_path, table, row, message):
    refused(tmp_path / "p.csv", f"image,x,y,class\na.jpg,1,1,road\n{row}\n", table, rf"p\.csv:3: .*{message}")


def test_csv_without_header_is_refused(tmp_path, table):
    refused(tmp_path / "p.csv", "a.jpg,1,1,road\n", table, r"p\.csv:1: header")


def _feature(image, x, y, cls):
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
            "properties": {"image": image, "class": cls}}


def test_geojson_reader_accepts_pixel_points(tmp_path, table):
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature("a.tif", 2.5, 3.9, "water"), _feature("dir/b", 9, 0, 0)]}, indent=1))
    points = read_point_annotations(path, table, SIZES)
    np.testing.assert_array_equal(points["a"], [[3, 2, 3]])
    np.testing.assert_array_equal(points["dir/b"], [[0, 9, 0]])


def test_geojson_reader_names_the_bad_feature(tmp_path, table):
    path = tmp_path / "p.geojson"
    features = [_feature("a", 1, 1, "road"), _feature("a", 1, 1, "road"), _feature("a", 1, 99, "road")]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1))
    with pytest.raises(PointFileError, match=r"p\.geojson: feature 2: outside every raster: "
                                             r"x=1, y=99 is outside image 'a' \(30x20 pixels\)$"):
        read_point_annotations(path, table, SIZES)


def test_geojson_broken_json_names_the_line(tmp_path, table):
    refused(tmp_path / "p.geojson", '{"type": "FeatureCollection",\n "features": [\n  {"type": "Feature",,}\n]}', table, r"p\.geojson: not a readable point layer \(.*line 3")


def test_geojson_map_coordinates_of_a_georeferenced_image(tmp_path, table):
    import rasterio
    from rasterio.transform import from_origin

    tif = tmp_path / "a.tif"
    transform = from_origin(500000.0, 4000000.0, 0.5, 0.5)  # 50 cm pixels, UTM-like origin
    with rasterio.open(tif, "w", driver="GTiff", width=30, height=20, count=3, dtype="uint8",
                       crs="EPSG:32634", transform=transform) as dst:
        dst.write(np.zeros((3, 20, 30), dtype=np.uint8))
    to_pixel = georeferencing(tif)
    assert to_pixel is not None
    path = tmp_path / "p.geojson"
    # Map point 5.25 m east and 3.1 m south of the origin -> column 10, row 6.
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature("a.tif", 500005.25, 3999996.9, "road")]}))
    points = read_point_annotations(path, table, SIZES, {"a": to_pixel})
    np.testing.assert_array_equal(points["a"], [[6, 10, 4]])
    # the same point in pixels: "geoseg:coordinates": "pixel" takes them as such, even here
    path.write_text(json.dumps({"type": "FeatureCollection", "geoseg:coordinates": "pixel",
                                "features": [_feature("a.tif", 10.5, 6.2, "road")]}))
    points = read_point_annotations(path, table, SIZES, {"a": to_pixel})
    np.testing.assert_array_equal(points["a"], [[6, 10, 4]])


def test_sparse_png_reader(tmp_path, table):
    label = np.full((10, 10), IGNORE_INDEX, np.uint8)
    label[2, 3], label[7, 7] = 1, 4
    good = tmp_path / "dir" / "b.png"
    good.parent.mkdir()
    Image.fromarray(label).save(good)
    np.testing.assert_array_equal(read_sparse_png(good, table, (10, 10)), label)
    points = read_point_annotations(tmp_path, table, SIZES)
    np.testing.assert_array_equal(points["dir/b"], [[2, 3, 1], [7, 7, 4]])

    label[5, 6] = 9
    bad = tmp_path / "bad.png"
    Image.fromarray(label).save(bad)
    with pytest.raises(PointFileError, match=r"bad\.png: row 5, column 6: value 9"):
        read_sparse_png(bad, table, (10, 10))
    with pytest.raises(PointFileError, match=r"b\.png: label is 10x10 pixels, its image 30x20"):
        read_sparse_png(good, table, (20, 30))


def test_one_error_type_for_point_files_and_layers():
    from training.points.layer import PointLayerError

    assert PointFileError is PointLayerError and issubclass(PointFileError, PointInputError)


def test_every_bad_row_of_a_csv_is_reported(tmp_path, table):
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,class\na.jpg,1,1,road\na.jpg,3,4,lava\na.jpg,1,1,road\n"
                    "a.jpg,30,4,building\n")
    with pytest.raises(PointFileError) as info:
        read_point_annotations(path, table, SIZES)
    message = str(info.value)
    assert message.startswith("2 bad points: ") and "\n" not in message
    assert f"{path}:3: unknown class: 'lava' is not in class table" in message
    assert f"{path}:5: outside every raster: x=30, y=4 is outside image 'a' (30x20 pixels)" in message


def test_every_unreadable_row_is_reported(tmp_path, table):
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,class\na.jpg,one,1,road\na.jpg,1,1,road\na.jpg,2,,road\n")
    with pytest.raises(PointFileError, match=r"^2 rows with unreadable coordinates: .*p\.csv:2: x and y "
                                             r"must be numbers.*; .*p\.csv:4: x and y must be numbers"):
        read_point_annotations(path, table, SIZES)


def test_many_bad_rows_give_the_first_ones_and_a_count(tmp_path, table):
    path = tmp_path / "p.csv"
    n = SHOWN_PROBLEMS + 5
    path.write_text("image,x,y,class\n" + "".join(f"zzz{k}.jpg,1,1,road\n" for k in range(n)))
    with pytest.raises(PointFileError) as info:
        read_point_annotations(path, table, SIZES)
    message = str(info.value)
    assert message.startswith(f"{n} bad points: {path}:2: image not among the rasters: image 'zzz0.jpg' "
                              f"is not in the dataset; ")
    assert message.count("is not in the dataset") == SHOWN_PROBLEMS and message.endswith("; and 5 more")


def test_every_bad_feature_of_a_geojson_is_reported(tmp_path, table):
    path = tmp_path / "p.geojson"
    features = [_feature("a", 1, 1, "lava"), _feature("a", 1, 1, "road"), _feature("nope", 1, 1, "road")]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(PointFileError, match=r"^2 bad points: .*p\.geojson: feature 0: unknown class: "
                                             r"'lava'.*; .*p\.geojson: feature 2: image not among"):
        read_point_annotations(path, table, SIZES)


def test_pixel_csv_column_names_and_class_names(tmp_path, table):
    path = tmp_path / "p.csv"
    path.write_text("Image,Column,ROW,Class\na.jpg,3,4,BUILDING\ndir/b.png,0,9,Road\n")
    points = read_point_annotations(path, table, SIZES)
    assert {k: v.tolist() for k, v in points.items()} == {"a": [[4, 3, 1]], "dir/b": [[9, 0, 4]]}
    path.write_text("image,col,y,class,note\na.jpg,3.9,4.1,2,x\n")
    assert read_point_annotations(path, table, SIZES)["a"].tolist() == [[4, 3, 2]]


def test_a_point_file_without_image_column_or_of_another_type_is_refused(tmp_path, table):
    refused(tmp_path / "p.csv", "x,y,class\n1,1,road\n", table, r"p\.csv:1: header has no image column")
    other = tmp_path / "p.gpkg"
    other.write_text("")
    with pytest.raises(PointFileError, match="unknown point file type '.gpkg'"):
        read_point_annotations(other, table, SIZES)


def test_every_bad_sparse_png_is_reported(tmp_path, table):
    label = np.full((10, 10), IGNORE_INDEX, np.uint8)
    label[1, 2], label[3, 4], label[5, 6] = 7, 8, 1
    (tmp_path / "dir").mkdir()
    Image.fromarray(label).save(tmp_path / "dir" / "b.png")
    Image.fromarray(label).save(tmp_path / "c.png")
    with pytest.raises(PointFileError) as info:
        read_point_annotations(tmp_path, table, SIZES)
    message = str(info.value)
    assert message.startswith("2 bad sparse label files: ")
    assert "c.png: no image 'c' in the dataset" in message
    assert "b.png: row 1, column 2: value 7" in message and "b.png: row 3, column 4: value 8" in message
