"""``geoseg predict``: a scene mapped in windows equals the handler's answer for the whole
image; the outputs read back through GDAL; resume after a kill; one band-scaling rule."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch

from handler.geoseg_handler import GeoSegHandler
from handler.inference import HandlerConfig
from model.artifact import BAND_SCALING, save_artifact
from model.class_table import ClassTable
from model.export import export_meta
from scene.cli import SUMMARY
from scene.cli import main as predict_main
from scene.run import LocalSegmenter, SceneJob, map_scene
from tests.scenes import COLLAR, PIXEL_M, scene_bands, write_scene
from tests.standins import ColourRule, StandInContext, write_near_tie, write_standin

TILE, OVERLAP = 32, 8
CONFIG = HandlerConfig(tile_size=TILE, tile_overlap=OVERLAP)
FLAGS = ["--tile", str(TILE), "--overlap", str(OVERLAP), "--quiet"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("predict")
    write_standin(work / "standin.pt", blur=15)  # sees past the kept centres: grid matters
    write_scene(work / "scene.tif", scene_bands(300, 370))
    return work


def handler_answer(work: Path, body: bytes, blend: str = "taper") -> np.ndarray:
    """The class GeoTIFF the handler answers for ``body`` as one request, read back."""
    ctx = StandInContext(work, headers={0: {"X-GeoSeg-Format": "geotiff"}},
                         handler_config={"tile_size": TILE, "tile_overlap": OVERLAP,
                                         "tile_blend": blend})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    answer = handler.handle([{"body": body}], ctx)[0]
    assert ctx.status == {}, answer
    with rasterio.MemoryFile(answer) as mem, mem.open() as src:
        return src.read(1)


def read_classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("tiles_per_window, blend", [(1, "taper"), (3, "taper"), (2, "centre")])
def test_scene_in_windows_equals_the_handlers_single_answer(work, tiles_per_window, blend):
    out = work / f"windows{tiles_per_window}-{blend}.tif"
    config = dataclasses.replace(CONFIG, tile_blend=blend)
    segmenter = LocalSegmenter(work / "standin.pt", "cpu", config)
    result = map_scene(SceneJob(work / "scene.tif", out), segmenter, config, tiles_per_window,
                       show_progress=False)
    assert result.windows > 4  # really cut into several windows
    expected = handler_answer(work, (work / "scene.tif").read_bytes(), blend)
    assert len(np.unique(expected)) >= 4
    np.testing.assert_array_equal(read_classes(out), expected)


def test_a_one_tile_scene_is_mapped_from_its_logits_as_the_handler_maps_it(tmp_path):
    """A scene that fits in one tile: local predict takes the handler's lone-tile predictor
    (the first maximum of the logits), not the argmax of the softmax, which differs for a
    model whose two best classes' probabilities round to one value."""
    write_near_tie(tmp_path / "standin.pt")
    bands = np.random.default_rng(2).integers(0, 256, size=(3, 30, 27), dtype=np.uint8)
    write_scene(tmp_path / "small.tif", bands, nodata=None)
    out = tmp_path / "small-map.tif"
    map_scene(SceneJob(tmp_path / "small.tif", out),
              LocalSegmenter(tmp_path / "standin.pt", "cpu", CONFIG), CONFIG, 1,
              show_progress=False)
    expected = handler_answer(tmp_path, (tmp_path / "small.tif").read_bytes())
    assert np.all(expected == 1)
    np.testing.assert_array_equal(read_classes(out), expected)


def test_outputs_read_back_through_gdal(work):
    out, gpkg, stats = work / "map.tif", work / "map.gpkg", work / "map.json"
    assert predict_main([str(work / "scene.tif"), str(out), "--model", str(work / "standin.pt"),
                         "--vector", str(gpkg), "--stats", str(stats), "--preview",
                         str(work / "map.jpg"), *FLAGS]) == 0
    with rasterio.open(work / "scene.tif") as src, rasterio.open(out) as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.crs == src.crs and cog.transform == src.transform
        assert cog.nodata == 255 and cog.count == 1 and cog.dtypes[0] == "uint8"
        table = ClassTable.load()
        # the sidecar's colour table: the classes only (the TIFF palette has 256 entries)
        assert cog.colormap(1) == {i: (*c, 255) for i, c in enumerate(table.colors)}
        classes = cog.read(1)
        assert np.all(classes[:COLLAR] == 255) and np.all(classes[:, :COLLAR] == 255)
        assert classes[COLLAR:, COLLAR:].max() < table.num_classes
        assert cog.tags(1)["CLASS_4"] == "road"
    categories = ET.parse(f"{out}.aux.xml").findall(".//Category")
    assert [c.text for c in categories] == list(table.names)

    summary = json.loads(stats.read_text())
    assert summary["nodata_pixels"] == int((classes == 255).sum())
    layers = pyogrio.list_layers(gpkg)
    assert len(layers) == 1
    info = pyogrio.read_info(gpkg)
    assert set(info["fields"]) == {"class_id", "class_name", "area_m2"}
    _, _, _, fields = pyogrio.raw.read(gpkg, columns=["class_id", "area_m2"])
    for entry in summary["classes"]:
        polygons = fields[1][fields[0] == entry["id"]].sum()
        assert entry["area_m2"] == pytest.approx(entry["pixels"] * PIXEL_M ** 2)
        assert polygons == pytest.approx(entry["area_m2"], rel=0.01, abs=1e-6)


def test_an_interrupted_run_resumes_to_the_same_bytes(work, tmp_path):
    big = write_scene(tmp_path / "big.tif", scene_bands(900, 1100, seed=3))
    args = [sys.executable, "-m", "scene.cli", str(big), "--model", str(work / "standin.pt"),
            "--tiles-per-window", "1", *FLAGS]
    whole = tmp_path / "whole.tif"
    subprocess.run([*args[:4], str(whole), *args[4:]], check=True, timeout=300)

    resumed = tmp_path / "resumed.tif"
    parts = tmp_path / "resumed.tif.parts"
    run = subprocess.Popen([*args[:4], str(resumed), *args[4:]])
    def finished() -> int:  # parts written whole (a NNNNNN.tmp.npz is being written)
        return len([p for p in parts.glob("*.npz") if p.stem.isdigit()])

    deadline = time.monotonic() + 120
    while finished() < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    kept = finished()
    assert kept >= 40 and not resumed.exists()

    again = subprocess.run([*args[:4], str(resumed), *args[4:], "--resume"], check=True,
                           timeout=300, capture_output=True, text=True)
    tiles_now = int(again.stderr.strip().splitlines()[-1].split(": ")[1].split()[0])
    summary = subprocess.run([*args[:4], str(tmp_path / "again.tif"), *args[4:]], check=True,
                             capture_output=True, text=True, timeout=300).stderr.strip().splitlines()[-1]
    total = int(summary.split(": ")[1].split()[0])
    cpu = SUMMARY.search(summary)  # the line benchmarks.predict reads
    assert cpu is not None and int(cpu[3]) > 0, summary
    assert tiles_now <= total - kept  # the finished windows were not segmented again
    assert resumed.read_bytes() == whole.read_bytes()
    assert not parts.exists()


def scaled_standin(path: Path, low: float, high: float) -> Path:
    """The colour-rule stand-in exported with band statistics ``low`` / ``high`` per band."""
    scripted = torch.jit.script(ColourRule().eval())
    meta = export_meta(ClassTable.load(), "colour-rule-standin",
                       {BAND_SCALING: {"low": [low] * 3, "high": [high] * 3}})
    save_artifact(scripted, meta, path)
    return path


def test_16_bit_halves_get_the_same_classes_as_the_whole(work, tmp_path):
    bands = scene_bands(200, 300, seed=11, collar=0).astype(np.uint16) * 40
    bands[:, :, 150:] = bands[:, :, 150:] * 4 // 5  # a darker half: its own stretch differs
    paths = {name: write_scene(tmp_path / f"{name}.tif", np.ascontiguousarray(part), nodata=None)
             for name, part in (("whole", bands), ("left", bands[:, :, :150]),
                                ("right", bands[:, :, 150:]))}
    near_cut = np.zeros(300, bool)
    near_cut[150 - 2:150 + 2] = True  # the stand-in sees 1 pixel around: the cut's edges differ

    def halves_and_whole(model: Path) -> tuple[np.ndarray, np.ndarray]:
        maps = {}
        for name, path in paths.items():
            out = tmp_path / f"{name}-{model.stem}.tif"
            assert predict_main([str(path), str(out), "--model", str(model), *FLAGS]) == 0
            maps[name] = read_classes(out)
        halves = np.concatenate([maps["left"], maps["right"]], axis=1)
        assert len(np.unique(maps["right"])) >= 3
        return halves[:, ~near_cut], maps["whole"][:, ~near_cut]

    halves, whole = halves_and_whole(scaled_standin(tmp_path / "scaled.pt", 0.0, 255.0 * 40))
    np.testing.assert_array_equal(halves, whole)
    halves, whole = halves_and_whole(work / "standin.pt")  # no statistics: per-scene stretch
    assert (halves != whole).mean() > 0.01


def test_a_model_whose_statistics_miss_bands_is_refused(work, tmp_path, capsys):
    bands = scene_bands(64, 64, collar=0).astype(np.uint16)
    path = write_scene(tmp_path / "rgb16.tif", bands, nodata=None)
    scripted = torch.jit.script(ColourRule().eval())
    save_artifact(scripted, export_meta(ClassTable.load(), "standin",
                                        {BAND_SCALING: {"low": [0.0], "high": [1.0]}}),
                  tmp_path / "grey.pt")
    assert predict_main([str(path), str(tmp_path / "o.tif"), "--model",
                         str(tmp_path / "grey.pt"), *FLAGS]) == 1
    assert "statistics cover 1 bands, the raster has 3" in capsys.readouterr().err


def test_clear_errors(work, tmp_path, capsys):
    model = ["--model", str(work / "standin.pt"), *FLAGS]
    (tmp_path / "exists.tif").write_bytes(b"x")
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    cases = [
        ([str(work / "scene.tif"), str(tmp_path / "exists.tif")], "exists; pass --overwrite"),
        ([str(tmp_path / "junk.tif"), str(tmp_path / "o.tif")], "not a readable raster"),
        ([str(tmp_path / "missing.tif"), str(tmp_path / "o.tif")], "no such file"),
        ([str(work / "scene.tif"), str(work / "scene.tif"), str(tmp_path / "o.tif")],
         "need a folder as OUTPUT"),
        ([str(work / "scene.tif"), str(work / "scene.tif"), str(tmp_path / "d"), "--stats",
          str(tmp_path / "s.json")], "needs '{stem}'"),
    ]
    for argv, message in cases:
        assert predict_main([*argv, *model]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    cases = [([str(work / "scene.tif"), str(tmp_path / "o.tif"), *model, "--overlap", "20"],
              "--overlap must be at most half of --tile")]   # TILE 32
    for argv, message in cases:
        assert predict_main(argv) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_one_tile_overlap_reaches_the_handler_geoseg_predict_and_validation(work, tmp_path):
    """The tiler is one: a HandlerConfig's overlap changes the served map, ``geoseg predict``'s
    map and what validation scores alike (the stand-in sees past a tile's kept centre, so the
    overlap changes its map)."""
    from model.artifact import load_artifact
    from training.run.evaluate import predictor

    bands = scene_bands(200, 230, seed=5, collar=0)
    scene = write_scene(tmp_path / "plain.tif", bands, nodata=None)
    network = load_artifact(work / "standin.pt", torch.device("cpu")).network
    image = torch.from_numpy(np.moveaxis(bands, 0, -1).copy()).permute(2, 0, 1)[None].float() / 255
    maps = {}
    for overlap in (8, 12):
        config = HandlerConfig(tile_size=TILE, tile_overlap=overlap)
        out = tmp_path / f"overlap{overlap}.tif"
        map_scene(SceneJob(scene, out), LocalSegmenter(work / "standin.pt", "cpu", config), config,
                  2, show_progress=False)
        ctx = StandInContext(work, headers={0: {"X-GeoSeg-Format": "geotiff"}},
                             handler_config={"tile_size": TILE, "tile_overlap": overlap})
        handler = GeoSegHandler()
        handler.initialize(ctx)
        with rasterio.MemoryFile(handler.handle([{"body": scene.read_bytes()}], ctx)[0]) as mem, \
                mem.open() as src:
            served = src.read(1)
        validated = predictor(network, torch.device("cpu"), config=config)(image)[0].numpy()
        np.testing.assert_array_equal(read_classes(out), served)
        np.testing.assert_array_equal(validated, served)
        maps[overlap] = served
    assert (maps[8] != maps[12]).mean() > 0.001  # the overlap really changes the map
