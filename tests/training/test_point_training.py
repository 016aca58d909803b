"""Training from rasters and a point layer, no mask anywhere: crops, hold-out, validation, export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from pyproj import Transformer

from handler.geoseg_handler import GeoSegHandler
from model.artifact import load_artifact
from model.class_table import IGNORE_INDEX, ClassTable
from model.export import main as export_main
from tests.scenes import ORIGIN, PIXEL_M, scene_bands, write_scene
from tests.standins import StandInContext
from training.data.sources import PointSupervisedDataset, Sample
from training.data.synthetic import generate_scene
from training.labels.expansion import PADDING
from training.points.evaluation import ValidationRaster, validate_points
from training.points.layer import MatchResult, PointLayer
from training.points.rasters import (
    PointTrainingError,
    RasterPointDataset,
    read_crop,
    split_points,
    training_scaling,
)
from training.train import main as train_main

UTM = "EPSG:32640"
TO_LONLAT = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
LANDCOVER = ClassTable.load()
FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "48",
        "--steps-per-epoch", "2", "--seed", "0", "--no-progress", "--max-pictures", "2"]


def map_xy(row: float, col: float, origin: tuple[float, float]) -> tuple[float, float]:
    """UTM x, y (m) of pixel position (col, row) of a raster written by write_scene at ``origin``."""
    return origin[0] + col * PIXEL_M, origin[1] - row * PIXEL_M


def write_lonlat_layer(path: Path, xy_utm: list[tuple[float, float]], names: list[str]) -> Path:
    """A GeoPackage in EPSG:4326 with the class name in the field ``landcover``."""
    xy = np.array(xy_utm, dtype=np.float64)
    lon, lat = TO_LONLAT.transform(xy[:, 0], xy[:, 1])
    geoms = np.array(shapely.to_wkb(shapely.points(np.stack([lon, lat], 1))), dtype=object)
    pyogrio.raw.write(path, geoms, [np.array(names, dtype=object)], ["landcover"],
                      geometry_type="Point", crs="EPSG:4326", driver="GPKG")
    return path


@pytest.fixture(scope="module")
def orthophotos(tmp_path_factory) -> tuple[Path, list[Path], list[tuple[int, int, int, int]]]:
    """Two 160 x 160 synthetic scenes (12 px nodata collar) 1 km apart in UTM 40N, and a point
    layer of 8 points per class per scene (pixel centres, from the scenes' own masks) plus
    three bad points: feature ids of (outside, nodata, unknown class) returned last."""
    work = tmp_path_factory.mktemp("ortho")
    rasters, xy, names = [], [], []
    rng = np.random.default_rng(0)
    for k in range(2):
        origin = (ORIGIN[0] + 1000.0 * k, ORIGIN[1])
        rgb, mask = generate_scene((160, 160), seed=k)
        bands = scene_bands(160, 160, seed=k)
        rasters.append(write_scene(work / f"ortho{k}.tif", bands, origin=origin))
        for c in range(LANDCOVER.num_classes):
            rows, cols = np.nonzero(mask[12:, 12:] == c)
            for i in rng.choice(len(rows), min(8, len(rows)), replace=False) if len(rows) else []:
                xy.append(map_xy(rows[i] + 12.5, cols[i] + 12.5, origin))
                names.append(LANDCOVER.names[c])
    good = len(names)
    xy += [map_xy(10, 10, (ORIGIN[0] - 5000.0, ORIGIN[1])),  # outside both rasters
           map_xy(3.5, 80.5, ORIGIN),  # in the nodata collar of ortho0
           map_xy(50.5, 50.5, ORIGIN)]  # class "lava" is not in the table
    names += ["water", "road", "lava"]
    layer = write_lonlat_layer(work / "clicks.gpkg", xy, names)
    return layer, rasters, [good + 1, good + 2, good + 3]  # GeoPackage feature ids start at 1


def test_training_from_a_point_layer_alone_reports_validates_exports_and_serves(
        orthophotos, tmp_path, capsys):
    layer, rasters, (outside, nodata, unknown) = orthophotos
    out = tmp_path / "run"
    code = train_main(["--images", str(rasters[0].parent / "ortho*.tif"), "--points", str(layer),
                       "--class-field", "landcover", "--classes", "model/classes.json",
                       "--val-block", "48", "--out", str(out), "--epochs", "2", *FAST])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"feature {outside}: outside every raster" in printed
    assert f"feature {nodata}: on nodata" in printed
    assert f"feature {unknown}: unknown class" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["points_per_class"] is None
    assert config["point_counts"] == {"usable": config["train_points"] + config["val_points"],
                                      "outside every raster": 1, "on nodata": 1, "unknown class": 1}
    assert 0 < config["val_points"] < config["train_points"]
    for record in metrics["epochs"]:
        assert record["val_points"] == config["val_points"]
        assert sum(map(sum, record["val_confusion"])) == config["val_points"]
        assert set(record["val_point_scores"]) == set(LANDCOVER.names)
    assert "val points: mIoU" in printed
    assert len(list((out / "pictures").glob("ortho*.png"))) == 2

    model_path = tmp_path / "model" / "standin.pt"
    model_path.parent.mkdir()
    assert export_main(["--checkpoint", str(out / "best.pt"), "--out", str(model_path),
                        "--parity-size", "32"]) == 0
    ctx = StandInContext(model_path.parent, headers={0: {"X-GeoSeg-Format": "geotiff"}},
                         handler_config={"tile_size": 64, "tile_overlap": 16})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    answer = handler.handle([{"body": rasters[1].read_bytes()}], ctx)[0]
    assert ctx.status == {}, answer
    with rasterio.MemoryFile(answer) as mem, mem.open() as src:
        classes = src.read(1)
        assert src.crs.to_epsg() == 32640 and classes.shape == (160, 160)
    assert set(np.unique(classes[12:, 12:])) <= set(range(LANDCOVER.num_classes))


def test_a_resumed_point_layer_run_equals_an_uninterrupted_one(orthophotos, tmp_path, capsys):
    """Seeded determinism and --resume hold on the point-layer path: 1 epoch + --resume gives
    the weights and the validation of a straight 2-epoch run."""
    from model.checkpoint import read_checkpoint

    layer, rasters, _ = orthophotos
    common = ["--images", *map(str, rasters), "--points", str(layer), "--val-block", "48",
              "--classes", "model/classes.json", "--epochs", "2", *FAST]
    assert train_main([*common, "--out", str(tmp_path / "straight")]) == 0
    assert train_main([*common, "--out", str(tmp_path / "split"), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert train_main([*common, "--out", str(tmp_path / "split"), "--resume"]) == 0
    assert "after epoch 1/2" in capsys.readouterr().out
    a = read_checkpoint(tmp_path / "straight" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert [r["val_confusion"] for r in a["history"]] == [r["val_confusion"] for r in b["history"]]


def test_a_layer_without_usable_points_stops_with_one_line(orthophotos, tmp_path, capsys):
    layer, rasters, _ = orthophotos
    far = write_lonlat_layer(tmp_path / "far.gpkg", [map_xy(0, 0, (0.0, 0.0))] * 2, ["water"] * 2)
    code = train_main(["--images", *map(str, rasters), "--points", str(far),
                       "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err
    assert code != 0 and "no usable points: 2 in" in err and "2 outside every raster" in err


def test_options_of_the_mask_path_are_refused_with_points(orthophotos, tmp_path, capsys):
    layer, rasters, _ = orthophotos
    for extra, message in ((["--scale", "0.5"], "--scale does not apply to --points"),
                           (["--points-per-class", "5"], "go with --data"),
                           (["--val-masks", str(rasters[0])], "--val-masks needs --val-images")):
        with pytest.raises(SystemExit):
            train_main(["--images", str(rasters[0]), "--points", str(layer),
                        "--out", str(tmp_path / "run"), *extra, *FAST])
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------- crops


def coded_raster(path: Path, height: int, width: int, nodata_rows: int = 0) -> Path:
    """An RGB raster whose pixel (r, c) holds (r % 256, c % 256, 100 + (r // 256) * 10 + c // 256),
    so a crop tells where it came from; the first ``nodata_rows`` rows are nodata (alpha 0)."""
    rows, cols = np.mgrid[:height, :width]
    bands = np.stack([rows % 256, cols % 256, 100 + rows // 256 * 10 + cols // 256]).astype(np.uint8)
    alpha = np.full((1, height, width), 255, np.uint8)
    alpha[:, :nodata_rows] = 0
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4,
                       dtype="uint8", crs=UTM, transform=rasterio.transform.from_origin(*ORIGIN, 1, 1),
                       photometric="RGB", alpha="YES", tiled=True, blockxsize=64, blockysize=64,
                       compress="deflate") as dst:
        dst.write(np.concatenate([bands, alpha]))
    return path


def decode_position(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (H, W) of every pixel of a crop of :func:`coded_raster`."""
    px = (image.numpy() * 255).round().astype(np.int64)
    hi = px[2] - 100
    return px[0] + hi // 10 * 256, px[1] + hi % 10 * 256


def test_point_crops_hold_their_points_on_the_right_pixels(tmp_path):
    raster = coded_raster(tmp_path / "coded.tif", 700, 900, nodata_rows=5)
    points = np.array([[10, 20, 1], [650, 880, 3], [300, 310, 2], [301, 310, 4]], dtype=np.int64)
    data = RasterPointDataset([raster], [points], seed=3, crop=64, random_share=0.0,
                              pad_label=PADDING)
    where = {(int(r), int(c)): int(k) for r, c, k in points}
    for draw in range(40):
        image, label = data[draw]
        assert image.shape == (3, 64, 64) and label.shape == (64, 64)
        labelled = np.argwhere(label.numpy() < PADDING)
        assert len(labelled), "a point crop must hold its point"
        rows, cols = decode_position(image)
        for y, x in labelled:  # through flips and rotations, each label sits on its own pixel
            assert where[(int(rows[y, x]), int(cols[y, x]))] == int(label[y, x])
        on_nodata = rows < 5
        assert (label.numpy()[on_nodata] == PADDING).all()
        assert (label.numpy()[~on_nodata] != PADDING).all()


def test_all_random_crops_equal_the_simulated_points_path(tmp_path):
    """--random-crops 1 over GeoTIFFs gives the crops, labels and augmentation of
    PointSupervisedDataset over the same images and points (with a small image padded alike)."""
    images = [generate_scene((90, 120), seed=1)[0], generate_scene((40, 70), seed=2)[0]]
    points = [np.array([[5, 6, 1], [80, 100, 2]]), np.array([[30, 60, 4]])]
    rasters = []
    for k, rgb in enumerate(images):
        rasters.append(write_scene(tmp_path / f"{k}.tif", np.moveaxis(rgb, -1, 0), nodata=None))

    class Memory:
        keys = ["0", "1"]

        def __len__(self) -> int:
            return 2

        def load(self, index: int) -> Sample:
            return Sample(self.keys[index], images[index], np.zeros(images[index].shape[:2], np.uint8))

    simulated = PointSupervisedDataset(Memory(), None, seed=5, crop=64,
                                       annotations={"0": points[0], "1": points[1]})
    layered = RasterPointDataset(rasters, points, seed=5, crop=64, random_share=1.0)
    for epoch in (0, 1):
        simulated.set_epoch(epoch)
        layered.set_epoch(epoch)
        for draw in range(6):
            a, b = simulated[draw], layered[draw]
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_crop_of_a_raster_smaller_than_the_crop_is_padded(tmp_path):
    raster = coded_raster(tmp_path / "small.tif", 20, 30)
    data = RasterPointDataset([raster], [np.zeros((0, 3), np.int64)], seed=0, crop=32)
    image, valid = read_crop(data.source(0), 0, 0, 32)
    assert image.shape == (32, 32, 3) and valid[:20, :30].all() and not valid[20:].any()
    assert (image[20:] == 0).all() and (image[:, 30:] == 0).all()


# ---------------------------------------------------------------------------------- hold-out


def _match(points: list[np.ndarray], rasters: list[Path]) -> MatchResult:
    layer = PointLayer(path=Path("layer.gpkg"), class_field="class", crs=None, features=())
    ids, start = [], 1
    for p in points:
        ids.append(np.arange(start, start + len(p)))
        start += len(p)
    return MatchResult(layer, tuple(rasters), tuple(points), tuple(ids), ())


def test_spatial_split_keeps_blocks_whole_and_named_rasters_apart():
    rng = np.random.default_rng(0)
    pts = [np.column_stack([rng.integers(0, 1000, 400), rng.integers(0, 1000, 400),
                            rng.integers(0, 5, 400)]) for _ in range(2)]
    split = split_points(_match(pts, [Path("a.tif"), Path("b.tif")]), 0.2, 100, seed=1)
    assert split.num_train + split.num_val == 800
    assert 0.1 < split.num_val / 800 < 0.3
    for train, val in zip(split.train, split.val):
        train_blocks = {(r // 100, c // 100) for r, c, _ in train}
        assert not train_blocks & {(r // 100, c // 100) for r, c, _ in val}
    named = split_points(_match(pts, [Path("a.tif"), Path("b.tif")]), 0.2, 100, 1, val_rasters=[1])
    assert len(named.train[1]) == 0 and len(named.val[1]) == 400 and len(named.val[0]) == 0
    with pytest.raises(PointTrainingError, match="1 block"):
        split_points(_match([pts[0][:3] % 50], [Path("a.tif")]), 0.2, 100, seed=1)


# -------------------------------------------------------------------------------- validation


def threshold_predictor(x: torch.Tensor, margin: int | None = None) -> torch.Tensor:
    """A pixel-wise stand-in network: class = red channel > 0.5 (1, 3, H, W) -> (1, H, W)."""
    return (x[:, 0] > 0.5).long()


def test_tiled_validation_equals_whole_raster_validation(tmp_path, monkeypatch):
    raster = coded_raster(tmp_path / "coded.tif", 700, 900)
    rows, cols = np.mgrid[:700, :900]
    truth = ((rows % 256) >= 128).astype(np.uint8)
    truth[:50] = 1 - truth[:50]  # the mask disagrees with the image on its first 50 rows
    mask = tmp_path / "mask.tif"
    with rasterio.open(mask, "w", driver="GTiff", width=900, height=700, count=1,
                       dtype="uint8") as dst:
        dst.write(truth[None])
    points = np.array([[10, 10, 0], [200, 5, 1], [690, 890, 1], [400, 450, 0]], dtype=np.int64)
    table = ClassTable(names=("low", "high"), colors=((0, 0, 0), (255, 255, 255)))
    val = [ValidationRaster(raster, points, mask)]
    whole = validate_points(threshold_predictor, val, table, progress=False)
    monkeypatch.setattr("training.points.evaluation.WHOLE_RASTER_PIXELS", 1000)
    tiled = validate_points(threshold_predictor, val, table, progress=False)
    expected = ((points[:, 0] % 256) >= 128).astype(np.int64)
    assert sorted(zip(whole.true, whole.pred)) == sorted(zip(points[:, 2], expected))
    assert sorted(zip(tiled.true, tiled.pred)) == sorted(zip(whole.true, whole.pred))
    assert np.array_equal(whole.dense, tiled.dense)
    assert whole.dense is not None and whole.dense.sum() == 700 * 900
    assert np.trace(whole.dense) == 700 * 900 - 50 * 900
    record = whole.record(table)
    assert record["val_points"] == 4 and record["val_dense_pixel_accuracy"] == pytest.approx(650 / 700)


def test_16_bit_rasters_get_one_scaling_that_reaches_the_exported_model(tmp_path):
    low = (np.arange(64 * 64).reshape(1, 64, 64) % 1000 + 1000).repeat(3, 0).astype(np.uint16)
    a = write_scene(tmp_path / "a.tif", low, nodata=None)
    b_origin = (ORIGIN[0] + 1000.0, ORIGIN[1])
    b = write_scene(tmp_path / "b.tif", low * 2, nodata=None, origin=b_origin)
    scaling = training_scaling([a, b])
    assert scaling is not None
    both = np.concatenate([low[0].ravel(), 2 * low[0].ravel()]).astype(np.float64)
    assert scaling.low[0] == pytest.approx(np.percentile(both, 2), rel=0.01)
    assert scaling.high[0] == pytest.approx(np.percentile(both, 98), rel=0.01)
    assert training_scaling([write_scene(tmp_path / "c.tif", scene_bands(32, 32))]) is None
    sites = [map_xy(r + 0.5, c + 0.5, o) for o in (ORIGIN, b_origin)
             for r, c in ((5, 5), (50, 40), (20, 60))]
    layer = write_lonlat_layer(tmp_path / "p.gpkg", sites, ["water", "road", "water"] * 2)
    out = tmp_path / "run"
    assert train_main(["--images", str(a), str(b), "--points", str(layer), "--val-images", str(b),
                       "--out", str(out), "--epochs", "1", *FAST]) == 0
    model = tmp_path / "m.pt"
    assert export_main(["--checkpoint", str(out / "best.pt"), "--out", str(model),
                        "--parity-size", "32"]) == 0
    assert load_artifact(model, torch.device("cpu")).band_scaling == scaling.to_meta()
    assert IGNORE_INDEX == 255


# ------------------------------------------------------------------------------------ memory

PEAK_RSS = """
import resource, sys
from training.train import main
code = main(sys.argv[1:])
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def sparse_scene(path: Path, side: int) -> Path:
    """A ``side`` x ``side`` RGB GeoTIFF (deflate, 256 px tiles, GDAL's SPARSE_OK: blocks never
    written take no room) holding four 256 px synthetic patches, and a CSV of one point per class
    and patch in UTM metres (``<path>.csv``)."""
    rgb, mask = generate_scene((256, 256), seed=0)
    lines = ["x,y,class"]
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                       crs=UTM, transform=rasterio.transform.from_origin(*ORIGIN, PIXEL_M, PIXEL_M),
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       sparse_ok=True) as dst:
        for r, c in ((side // 20, side // 20), (side * 3 // 5, side * 3 // 5),
                     (side // 2, side // 3), (side // 3, side // 2)):
            dst.write(np.moveaxis(rgb, -1, 0), window=rasterio.windows.Window(c, r, 256, 256))
            for cls in range(LANDCOVER.num_classes):
                ys, xs = np.nonzero(mask == cls)
                if len(ys):
                    x, y = map_xy(r + ys[0] + 0.5, c + xs[0] + 0.5, ORIGIN)
                    lines.append(f"{x},{y},{cls}")
    Path(f"{path}.csv").write_text("\n".join(lines) + "\n")
    return path


def peak_rss_mib(raster: Path, out: Path) -> float:
    """Peak RSS (MiB) of a 3-step training run on ``raster`` in a fresh process."""
    import subprocess
    import sys

    args = ["--images", str(raster), "--points", f"{raster}.csv", "--csv-crs", UTM,
            "--out", str(out), "--epochs", "1", "--threads", "1", "--val-block", "128",
            "--expand", "none", *FAST]
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return int(proc.stdout.split("PEAK_RSS_KIB")[1].split()[0]) / 1024


def test_a_20000_px_raster_trains_in_the_memory_of_a_small_one(tmp_path):
    """Decoded, the 20000 x 20000 RGB raster is 1144 MiB. Its run (training crops, validation
    cells) must peak within a tenth of that above the same run on a 1200 x 1200 raster (3.9 MiB
    decoded): the raster's size does not reach memory. Measured on the 2-core CPU machine:
    1131-1146 MiB for the large raster, 1145-1153 MiB for the small one, nearly all of it torch
    and the network; reading the large raster whole takes the run to 2556 MiB. Without forest
    labels: they label only blocks near the points (tested with the forest above) and add about
    250-450 MiB of per-block features on any raster (1405 MiB small, 1574 MiB large, measured
    once), which would hide what this test watches."""
    big = peak_rss_mib(sparse_scene(tmp_path / "big.tif", 20000), tmp_path / "big")
    small = peak_rss_mib(sparse_scene(tmp_path / "small.tif", 1200), tmp_path / "small")
    decoded_mib = 20000 * 20000 * 3 / 2**20
    assert big - small < decoded_mib / 10, (big, small)


def test_a_simulated_layer_holds_the_points_and_pixels_of_the_simulated_path(tiny_folders, tmp_path):
    """training.points.simulated writes the pixels the --data path reads and, in EPSG:4326, the
    points --points-per-class draws: read back and matched, they land on the same pixels."""
    from training.data.options import add_data_args, open_source
    from training.points.files import simulate_points
    from training.points.layer import match_points, read_point_layer, resolve_classes
    from training.points.simulated import main as simulated_layer

    geo, gpkg = tmp_path / "geo", tmp_path / "points.gpkg"
    options = ["--data", str(tiny_folders), "--dataset", "folders", "--scale", "0.5"]
    assert simulated_layer([*options, "--points-per-class", "3", "--seed", "2", "--out", str(geo),
                            "--layer", str(gpkg)]) == 0
    import argparse
    p = argparse.ArgumentParser()
    add_data_args(p)
    args = p.parse_args(options)
    table = ClassTable.load(tiny_folders / "classes.json")
    rasters = sorted((geo / "train").glob("*.tif")) + sorted((geo / "val").glob("*.tif"))
    layer = read_point_layer(gpkg)
    assert layer.class_field == "landcover"
    table_read, mapping = resolve_classes(layer.values(), table)
    match = match_points(layer, rasters, table_read, mapping)
    assert not match.rejected
    k = 0
    for split in ("train", "val"):
        source = open_source(args, split, table)
        for index in range(len(source)):
            sample = source.load(index)
            with rasterio.open(rasters[k]) as src:
                assert np.array_equal(np.moveaxis(src.read(), 0, -1), sample.image)
            expected = simulate_points(sample.mask, 3, [2, index])
            assert sorted(map(tuple, match.points[k].tolist())) == sorted(map(tuple, expected.tolist()))
            k += 1


def test_plain_png_tiles_train_from_a_pixel_csv(tmp_path, capsys):
    """Tiles without georeferencing: a CSV image,x,y,class in pixels, held out by blocks."""
    from PIL import Image

    lines = ["image,x,y,class"]
    for k in range(2):
        rgb, mask = generate_scene((96, 96), seed=10 + k)
        Image.fromarray(rgb).save(tmp_path / f"tile_{k}.png")
        for y in range(4, 96, 12):
            for x in range(4, 96, 12):
                lines.append(f"tile_{k}.png,{x + 0.5},{y + 0.5},{LANDCOVER.names[mask[y, x]]}")
    (tmp_path / "clicks.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert train_main(["--images", str(tmp_path), "--points", str(tmp_path / "clicks.csv"),
                       "--val-block", "32", "--out", str(out), "--epochs", "1", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "128 points, 128 usable" in printed and "held out by spatial blocks of 32 px" in printed
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["train_points"] + config["val_points"] == 128 and config["val_points"] > 0


def test_validation_masks_pair_by_stem_then_by_order(tmp_path):
    from training.points.evaluation import pair_masks

    rasters = [coded_raster(tmp_path / f"{n}.tif", 8, 8) for n in ("b", "a")]
    (tmp_path / "m").mkdir()
    masks = [coded_raster(tmp_path / "m" / f"{n}.tif", 8, 8) for n in ("a", "b")]
    assert pair_masks(rasters, masks) == {rasters[0]: masks[1], rasters[1]: masks[0]}
    other = [coded_raster(tmp_path / "m" / f"{n}.tif", 8, 8) for n in ("x", "y")]
    assert pair_masks(rasters, other) == dict(zip(rasters, other))
    with pytest.raises(PointTrainingError, match="one per --val-images raster"):
        pair_masks(rasters, other[:1])
    small = coded_raster(tmp_path / "m" / "z.tif", 8, 6)
    with pytest.raises(PointTrainingError, match="its raster"):
        pair_masks(rasters[:1], [small])


# ------------------------------------------------------------------------------- forest labels

def test_forest_labels_of_rasters_are_right_block_by_block_and_reach_the_crops(orthophotos, tmp_path):
    from scene.source import SceneSource
    from training.labels.expansion import EXPANDED_OFFSET
    from training.labels.forest import ForestSettings
    from training.labels.raster_forest import RasterForestLabels

    _, rasters, _ = orthophotos
    masks, points = [], []
    for k in range(2):
        _, mask = generate_scene((160, 160), seed=k)
        rng = np.random.default_rng(k)
        rows, cols = rng.integers(12, 160, 60), rng.integers(12, 160, 60)
        masks.append(mask)
        points.append(np.stack([rows, cols, mask[rows, cols]], 1).astype(np.int64))
    settings = ForestSettings(n_estimators=30, n_jobs=1)
    sources = [SceneSource(r, None) for r in rasters]
    whole = RasterForestLabels(sources, points, 5, settings=settings)
    blocked = RasterForestLabels(sources, points, 5, settings=settings, block=64)  # 3 x 3 blocks
    for k in range(2):
        labels = whole.labels[k].window(0, 0, 160, 160)
        np.testing.assert_array_equal(blocked.labels[k].window(0, 0, 160, 160), labels)
        assert len(blocked.labels[k].blocks) == 9
        assert (labels[:12] == IGNORE_INDEX).all() and (labels[:, :12] == IGNORE_INDEX).all()
        given = labels != IGNORE_INDEX
        assert given.mean() > 0.5 and (labels[given] == masks[k][given]).mean() > 0.85

    corner = [p[(p[:, 0] < 40) & (p[:, 1] < 40)] for p in points]   # clicks in one corner only
    near = RasterForestLabels(sources, corner, 5, settings=settings, block=64, reach=16)
    assert [sorted(labels.blocks) for labels in near.labels] == [[(0, 0)], [(0, 0)]]
    assert (near.labels[0].window(64, 64, 96, 96) == IGNORE_INDEX).all()

    dataset = RasterPointDataset(rasters, points, seed=0, crop=48, pad_label=PADDING, augment=False)
    plain = RasterPointDataset(rasters, points, seed=0, crop=48, pad_label=PADDING, augment=False)
    dataset.use_forest_labels(whole.labels)
    for draw in range(6):
        (_, target), (_, sparse) = dataset[draw], plain[draw]
        clicked = sparse < EXPANDED_OFFSET
        assert torch.equal(target[clicked], sparse[clicked])        # points keep their class
        assert ((target >= EXPANDED_OFFSET) & (target < PADDING)).any()
        assert torch.equal(target == PADDING, sparse == PADDING)  # nodata stays padding


def test_a_point_layer_run_with_forest_labels_records_them(orthophotos, tmp_path, capsys):
    layer, rasters, _ = orthophotos
    out = tmp_path / "run"
    assert train_main(["--images", str(rasters[0].parent / "ortho*.tif"), "--points", str(layer),
                       "--class-field", "landcover", "--classes", "model/classes.json",
                       "--val-block", "48", "--out", str(out), "--epochs", "1",
                       "--expand", "forest", *FAST]) == 0, capsys.readouterr().err
    assert "forest labels:" in capsys.readouterr().out
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["expand"] == "forest" and 0.3 < config["forest_labels"]["labelled_share"] <= 1
