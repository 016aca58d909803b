"""The model inside QGIS and ArcGIS: ONNX export with Deepness's metadata, the ArcGIS package,
and ``geoseg predict --model model.onnx``.

Deepness's documented pipeline is run here in plain numpy and onnxruntime (uint8 or raw bands
/ 255, then (x - standardization_mean) / standardization_std, the model, the seg_thresh
threshold, argmax) and compared with ``geoseg predict`` on the TorchScript export of the same
checkpoint; the ArcGIS inference function is driven as ArcGIS calls it.
"""
from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import rasterio

from model.export import main as export_main
from model.onnx_export import training_resolution_cm
from scene.cli import main as predict_main
from tests.scenes import scene_bands, write_scene
from tests.standins import varied_checkpoint

TILE = 512
OVERLAP = 96
PADDING = OVERLAP // 2
SCALING = {"low": [300.0, 500.0, 700.0], "high": [4300.0, 5500.0, 6700.0]}
AGREEMENT = 0.999  # the parity figure: onnxruntime vs TorchScript, share of pixels


@pytest.fixture(scope="module")
def exports(tmp_path_factory, table):
    """One 8-bit checkpoint exported as TorchScript and ONNX (``--format onnx``), one with a
    16-bit band scaling as TorchScript and ``.dlpk`` (format from the suffix)."""
    folder = tmp_path_factory.mktemp("gis")
    plain = varied_checkpoint(folder / "plain.pt.ckpt", table, TILE)
    scaled = varied_checkpoint(folder / "scaled.pt.ckpt", table, TILE, band_scaling=SCALING)
    for argv in (["--checkpoint", plain, "--out", folder / "plain.pt"],
                 ["--checkpoint", plain, "--out", folder / "plain.onnx", "--format", "onnx",
                  "--resolution", "50"],
                 ["--checkpoint", scaled, "--out", folder / "scaled.pt"],
                 ["--checkpoint", scaled, "--out", folder / "scaled.dlpk"]):
        assert export_main([str(a) for a in argv]) == 0
    with zipfile.ZipFile(folder / "scaled.dlpk") as archive:
        archive.extractall(folder / "scaled-dlpk")
    return folder


def onnx_metadata(path: Path) -> dict:
    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


def deepness_classes(onnx_path: Path, raster: Path) -> np.ndarray:
    """Deepness's pipeline on a raster of exactly one tile: (H, W) class ids."""
    meta = onnx_metadata(onnx_path)
    with rasterio.open(raster) as src:
        tile = np.moveaxis(src.read(), 0, -1)[None].astype(np.float32)  # (1, H, W, C)
    tile = tile * (1.0 / 255.0)
    tile = (tile - np.array(meta["standardization_mean"])) / np.array(meta["standardization_std"])
    tile = np.transpose(tile, (0, 3, 1, 2)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {session.get_inputs()[0].name: tile})[0][0]
    probabilities[probabilities < meta["seg_thresh"]] = 0
    return probabilities.argmax(0)


def geoseg_classes(model: Path, raster: Path, out: Path, *flags: str) -> np.ndarray:
    assert predict_main([str(raster), str(out), "--model", str(model), "--device", "cpu",
                         "--quiet", *flags]) == 0
    with rasterio.open(out) as src:
        return src.read(1)


def test_onnx_metadata_reads_back_as_deepness_expects(exports, table):
    proto = onnx.load(str(exports / "plain.onnx"))
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    dims = [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, TILE, TILE]  # dynamic batch, square
    dims = [d.dim_value or d.dim_param for d in graph_output.type.tensor_type.shape.dim]
    assert dims[1:] == [table.num_classes, TILE, TILE]
    meta = onnx_metadata(exports / "plain.onnx")
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {str(i): name for i, name in enumerate(table.names)}
    assert meta["tile_size"] == meta["tiles_size"] == TILE
    assert meta["tiles_overlap"] == round(100 * OVERLAP / TILE)
    assert meta["standardization_mean"] == [0.0] * 3 and meta["standardization_std"] == [1.0] * 3
    assert meta["seg_thresh"] == 0.0 and meta["seg_small_segment"] == 0
    assert meta["resolution"] == 50.0
    assert meta["geoseg"]["classes"] == table.to_dict()


def test_deepness_pipeline_gives_geoseg_predicts_map(exports, tmp_path):
    raster = write_scene(tmp_path / "one-tile.tif", scene_bands(TILE, TILE, collar=0), nodata=None)
    ours = geoseg_classes(exports / "plain.pt", raster, tmp_path / "map.tif")
    theirs = deepness_classes(exports / "plain.onnx", raster)
    assert len(np.unique(ours)) >= 3  # a map with classes to disagree on
    assert (ours == theirs).mean() >= AGREEMENT


def test_geoseg_predict_runs_the_onnx_model_like_torchscript(exports, tmp_path):
    raster = write_scene(tmp_path / "scene.tif", scene_bands(700, 900))
    scripted = geoseg_classes(exports / "plain.pt", raster, tmp_path / "ts.tif")
    onnx_map = geoseg_classes(exports / "plain.onnx", raster, tmp_path / "onnx.tif")
    assert len(np.unique(scripted[scripted != 255])) >= 3
    assert ((scripted == 255) == (onnx_map == 255)).all()  # the nodata collar, both ways
    assert (scripted == onnx_map).mean() >= AGREEMENT


def test_16_bit_band_scaling_reaches_deepness_through_its_standardization(exports, tmp_path):
    meta = onnx_metadata(exports / "scaled-dlpk" / "geoseg.onnx")
    low, high = np.array(SCALING["low"]), np.array(SCALING["high"])
    assert np.allclose(meta["standardization_mean"], low / 255)
    assert np.allclose(meta["standardization_std"], (high - low) / 255)
    bands = scene_bands(TILE, TILE, collar=0).astype(np.float64) / 255
    raw = (low[:, None, None] + bands * (high - low)[:, None, None]).astype(np.uint16)
    raster = write_scene(tmp_path / "u16.tif", raw, nodata=None)
    ours = geoseg_classes(exports / "scaled.pt", raster, tmp_path / "map.tif")
    theirs = deepness_classes(exports / "scaled-dlpk" / "geoseg.onnx", raster)
    assert len(np.unique(ours)) >= 3
    assert (ours == theirs).mean() >= AGREEMENT


def test_dlpk_holds_what_esris_model_definition_schema_names(exports, table):
    with zipfile.ZipFile(exports / "scaled.dlpk") as archive:
        names = set(archive.namelist())
        emd = json.loads(archive.read("geoseg.emd"))
    assert names == {"geoseg.emd", "geoseg.onnx", "GeoSegClassifier.py"}
    assert emd["ModelFile"] in names and emd["InferenceFunction"] in names
    assert emd["ModelType"] == "ImageClassification"
    assert isinstance(emd["Framework"], str) and isinstance(emd["ModelConfiguration"], str)
    assert emd["ImageHeight"] == emd["ImageWidth"] == TILE
    assert emd["ExtractBands"] == [0, 1, 2] and emd["BatchSize"] >= 1
    assert emd["ModelPadding"] == PADDING
    assert [c["Value"] for c in emd["Classes"]] == list(range(table.num_classes))
    assert [c["Name"] for c in emd["Classes"]] == list(table.names)
    assert [tuple(c["Color"]) for c in emd["Classes"]] == list(table.colors)
    assert emd["GeoSeg"]["band_scaling"] == SCALING


def load_inference_function(folder: Path):
    spec = importlib.util.spec_from_file_location("GeoSegClassifier", folder / "GeoSegClassifier.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GeoSegClassifier()


def test_arcgis_inference_function_classifies_a_block_like_geoseg(exports, tmp_path, table):
    function = load_inference_function(exports / "scaled-dlpk")
    function.initialize(model=str(exports / "scaled-dlpk" / "geoseg.emd"), device=-1)
    assert {"raster", "model"} <= {p["name"] for p in function.getParameterInfo()}
    config = function.getConfiguration()
    assert config["tx"] == config["ty"] == TILE - 2 * PADDING and config["padding"] == PADDING
    info = function.updateRasterInfo(output_info={})["output_info"]
    assert info["bandCount"] == 1 and info["pixelType"] == "u1"
    rows = json.loads(info["rasterAttributeTable"])["features"]
    assert [r["attributes"]["Classname"] for r in rows] == list(table.names)

    low, high = np.array(SCALING["low"]), np.array(SCALING["high"])
    bands = scene_bands(TILE, TILE, collar=0).astype(np.float64) / 255
    raw = (low[:, None, None] + bands * (high - low)[:, None, None]).astype(np.uint16)
    block = function.updatePixels((0, 0), (1, TILE, TILE), {"pixelType": "u1"},
                                  raster_pixels=raw.copy(),
                                  raster_mask=np.ones((1, TILE, TILE), np.uint8))["output_pixels"]
    assert block.shape == (1, TILE - 2 * PADDING, TILE - 2 * PADDING) and block.dtype == np.uint8
    raster = write_scene(tmp_path / "u16.tif", raw, nodata=None)
    ours = geoseg_classes(exports / "scaled.pt", raster, tmp_path / "map.tif")
    centre = ours[PADDING:TILE - PADDING, PADDING:TILE - PADDING]
    assert len(np.unique(centre)) >= 3
    assert (block[0] == centre).mean() >= AGREEMENT


def test_resolution_is_read_from_projected_training_rasters(tmp_path):
    metres = write_scene(tmp_path / "utm.tif", scene_bands(32, 32))  # 0.5 m pixels
    degrees = write_scene(tmp_path / "wgs.tif", scene_bands(32, 32), origin=(55.0, 25.0),
                          crs="EPSG:4326")
    assert training_resolution_cm({"images": [str(metres)]}) == 50.0
    assert training_resolution_cm({"images": [str(degrees)]}) is None
    assert training_resolution_cm({"images": None}) is None


def test_clear_errors_for_onnx_models(exports, tmp_path, capsys):
    raster = write_scene(tmp_path / "scene.tif", scene_bands(64, 64))
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    cases = [(["--model", str(foreign)], "without GeoSeg's 'geoseg' metadata"),
             (["--model", str(garbage)], "not a readable ONNX file"),
             (["--model", str(exports / "plain.onnx"), "--tile", "256", "--overlap", "32"],
              "takes tiles of 512 px")]
    for flags, message in cases:
        capsys.readouterr()
        assert predict_main([str(raster), str(tmp_path / "o.tif"), "--quiet", *flags]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    checkpoint = exports / "plain.pt.ckpt"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.onnx"),
                        "--tile-size", "128", "--tile-overlap", "64"]) != 0
    assert "less than half" in capsys.readouterr().err
