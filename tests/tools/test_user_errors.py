"""What a new user runs into (issue 21): every mistake is caught before any work starts, and
ends in one line ``error: ...`` on stderr and a non-zero exit code, never a traceback or a
library's warning. In-process and fast: tiny rasters and the stand-in models."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene.cli import main as predict_main
from tests.scenes import scene_bands, write_scene
from tests.standins import write_standin

TILE, OVERLAP = 32, 8
FLAGS = ["--tile", str(TILE), "--overlap", str(OVERLAP), "--quiet"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("user-errors")
    write_standin(work / "standin.pt")
    write_scene(work / "scene.tif", scene_bands(64, 80))
    return work


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def plain_jpeg(path: Path, seed: int = 0) -> Path:
    """A 40 x 50 JPEG without any georeferencing."""
    rgb = np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)
    return path


# 1. Every input is checked against the requested outputs before anything is segmented.

def test_vectors_of_plain_images_are_refused_before_any_work(work, tmp_path, capsys):
    a, b = plain_jpeg(tmp_path / "a.jpg"), plain_jpeg(tmp_path / "b.jpg", seed=1)
    out = tmp_path / "out"
    code = predict_main([str(a), str(b), str(out), "--vector", str(out / "{stem}.gpkg"),
                         "--model", str(work / "standin.pt"), *FLAGS])
    line = one_line(capsys.readouterr().err)
    assert code != 0
    assert "a.jpg" in line and "CRS" in line and "--vector" in line
    assert not out.exists() or not any(out.iterdir())  # nothing segmented, no .parts left


def test_min_area_on_degrees_is_refused_before_any_work(work, tmp_path, capsys):
    scene = write_scene(tmp_path / "lonlat.tif", scene_bands(64, 80), crs="EPSG:4326",
                        origin=(55.0, 25.0))
    out = tmp_path / "o.tif"
    code = predict_main([str(scene), str(out), "--vector", str(tmp_path / "o.gpkg"),
                         "--min-area", "10", "--model", str(work / "standin.pt"), *FLAGS])
    line = one_line(capsys.readouterr().err)
    assert code != 0 and "--min-area" in line and "projected" in line
    assert not out.exists() and not Path(f"{out}.parts").exists()


def test_an_unknown_vector_format_is_refused_before_any_work(work, tmp_path, capsys):
    out = tmp_path / "o.tif"
    code = predict_main([str(work / "scene.tif"), str(out), "--vector", str(tmp_path / "o.kml"),
                         "--model", str(work / "standin.pt"), *FLAGS])
    line = one_line(capsys.readouterr().err)
    assert code != 0 and "o.kml" in line
    assert not out.exists() and not Path(f"{out}.parts").exists()


# 2. Kept parts are never deleted silently; a finished output is not redone by --resume.

def test_kept_parts_need_resume_or_overwrite(work, tmp_path, capsys):
    out = tmp_path / "o.tif"
    parts = Path(f"{out}.parts")
    parts.mkdir()
    (parts / "run.json").write_text("{}")
    (parts / "000000.npz").write_bytes(b"a finished window")
    argv = [str(work / "scene.tif"), str(out), "--model", str(work / "standin.pt"), *FLAGS]
    assert predict_main(argv) != 0
    line = one_line(capsys.readouterr().err)
    assert "interrupted" in line and "--resume" in line and "--overwrite" in line
    assert (parts / "000000.npz").exists()
    assert predict_main([*argv, "--overwrite"]) == 0
    assert out.exists() and not parts.exists()


def test_resume_of_a_finished_output_does_nothing(work, tmp_path, capsys):
    out, stats = tmp_path / "o.tif", tmp_path / "o.json"
    argv = [str(work / "scene.tif"), str(out), "--stats", str(stats),
            "--model", str(work / "standin.pt"), *FLAGS]
    assert predict_main(argv) == 0
    before = (out.stat().st_mtime_ns, stats.stat().st_mtime_ns)
    capsys.readouterr()
    assert predict_main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "complete" in err and "Traceback" not in err
    assert (out.stat().st_mtime_ns, stats.stat().st_mtime_ns) == before


def test_resume_does_not_replace_an_output_it_did_not_start(work, tmp_path, capsys):
    out = tmp_path / "o.tif"
    out.write_bytes(b"a map a user relies on")
    assert predict_main([str(work / "scene.tif"), str(out), "--stats", str(tmp_path / "s.json"),
                         "--resume", "--model", str(work / "standin.pt"), *FLAGS]) != 0
    assert "--overwrite" in one_line(capsys.readouterr().err)
    assert out.read_bytes() == b"a map a user relies on"


# 3. A server that does not answer is named at once, not after minutes of retries.

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_is_named_at_once(work, tmp_path, capsys):
    import time

    dead = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    code = predict_main([str(work / "scene.tif"), str(tmp_path / "o.tif"), "--server", dead,
                         *FLAGS])
    assert time.monotonic() - start < 10
    line = one_line(capsys.readouterr().err)
    assert code != 0 and dead in line and "ping" in line
    assert not (tmp_path / "o.tif").exists()


# 5. Library warnings stay out of the user's terminal; the command says what matters itself.

def test_a_plain_image_gives_a_note_and_no_library_warning(work, tmp_path, capsys, recwarn):
    a = plain_jpeg(tmp_path / "a.jpg")
    assert predict_main([str(a), str(tmp_path / "o.tif"), "--model", str(work / "standin.pt"),
                         *FLAGS]) == 0
    err = capsys.readouterr().err
    assert [str(w.message) for w in recwarn] == []
    assert "Warning" not in err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "a.jpg" in notes[0] and "no CRS" in notes[0], err


# 6. Point CSVs with the usual column names; errors name the command-line option.

def point_scene(tmp_path: Path) -> tuple[Path, list[tuple[float, float, str]]]:
    """A 64 x 64 UTM 40N scene and three points on it (UTM x, y, class)."""
    from tests.scenes import ORIGIN, PIXEL_M

    raster = write_scene(tmp_path / "scene.tif", scene_bands(64, 64, collar=0))
    points = [(ORIGIN[0] + (c + 0.5) * PIXEL_M, ORIGIN[1] - (r + 0.5) * PIXEL_M, name)
              for r, c, name in ((10, 12, "water"), (30, 40, "road"), (50, 20, "building"))]
    return raster, points


@pytest.mark.parametrize("header", ["lon,lat", "Longitude,Latitude", "X,Y", "LNG,lat"])
def test_csv_columns_of_longitude_and_latitude(tmp_path, header):
    from pyproj import Transformer

    from training.points.layer import match_points, read_point_layer, resolve_classes

    raster, points = point_scene(tmp_path)
    to_lonlat = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True)
    rows = [f"{lon:.9f},{lat:.9f},{name}"
            for (x, y, name) in points for lon, lat in [to_lonlat.transform(x, y)]]
    path = tmp_path / "clicks.csv"
    path.write_text(f"{header},class\n" + "\n".join(rows) + "\n")
    layer = read_point_layer(path, csv_crs="EPSG:4326")
    table, mapping = resolve_classes(layer.values(), None)
    result = match_points(layer, [raster], table, mapping)
    assert not result.rejected and result.num_usable == 3
    assert sorted(result.points[0][:, :2].tolist()) == [[10, 12], [30, 40], [50, 20]]


def test_csv_columns_of_easting_and_northing(tmp_path):
    from training.points.layer import read_point_layer

    _, points = point_scene(tmp_path)
    path = tmp_path / "clicks.csv"
    path.write_text("Easting,Northing,class\n" + "".join(f"{x},{y},{n}\n" for x, y, n in points))
    layer = read_point_layer(path, csv_crs="EPSG:32640")
    assert [(f.x, f.y) for f in layer.features] == [(x, y) for x, y, _ in points]


def test_two_candidate_coordinate_columns_are_refused(tmp_path):
    from training.points.layer import PointLayerError, read_point_layer

    path = tmp_path / "clicks.csv"
    path.write_text("x,lon,y,class\n1,2,3,water\n")
    with pytest.raises(PointLayerError, match="x, lon could each be"):
        read_point_layer(path, csv_crs="EPSG:4326")


def test_point_errors_name_the_command_line_option(tmp_path, capsys):
    from training.train import main as train_main

    raster, points = point_scene(tmp_path)
    path = tmp_path / "clicks.csv"
    path.write_text("lon,lat,class\n" + "".join(f"{x},{y},{n}\n" for x, y, n in points))
    base = ["--images", str(raster), "--points", str(path), "--out", str(tmp_path / "run"),
            "--no-progress", "--epochs", "1"]
    for extra in ([], ["--csv-crs", "EPSG:99999999"]):
        assert train_main([*base, *extra]) != 0
        line = one_line(capsys.readouterr().err)
        assert "--csv-crs" in line and "csv_crs" not in line, line


def test_pixel_csv_headers_are_matched_case_insensitively(tmp_path):
    from model.class_table import ClassTable
    from training.points.files import read_point_annotations

    path = tmp_path / "points.csv"
    path.write_text("Image,X,Y,Class\ntile_1.png,3,4,water\n")
    points = read_point_annotations(path, ClassTable.load(), {"tile_1": (8, 8)})
    assert points["tile_1"].tolist() == [[4, 3, 3]]


# 8, 10. A point-layer run says how it reads its rasters, warns of a class with few points,
# and records what it really used.

FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "32",
        "--steps-per-epoch", "1", "--epochs", "1", "--seed", "0", "--no-progress",
        "--max-pictures", "0", "--device", "cpu", "--val-block", "16"]


def run_main(main, argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``main(argv)`` (argparse's SystemExit included)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def grey16_points(folder: Path, extra: str = "") -> tuple[Path, Path]:
    """A 96 x 96 single-band uint16 UTM scene and a CSV of 6 points per class on it (plus
    ``extra`` rows)."""
    from tests.scenes import ORIGIN, PIXEL_M

    bands = (scene_bands(96, 96, collar=0)[:1].astype(np.uint16) * 40)
    raster = write_scene(folder / "grey16.tif", bands, nodata=None)
    rng = np.random.default_rng(0)
    names = ["background", "building", "woodland", "water", "road"]
    rows = [f"{ORIGIN[0] + (c + 0.5) * PIXEL_M},{ORIGIN[1] - (r + 0.5) * PIXEL_M},{names[k % 5]}"
            for k, (r, c) in enumerate(rng.integers(0, 96, (30, 2)))]
    points = folder / "clicks.csv"
    points.write_text("x,y,class\n" + "\n".join(rows) + "\n" + extra)
    return raster, points


@pytest.fixture(scope="module")
def grey16_run(tmp_path_factory) -> tuple[Path, int, str, str]:
    """A one-step point-layer run on a 16-bit single-band raster whose layer holds one point
    of a misspelt class ("lava"): its folder, exit code, stdout and stderr."""
    from tests.scenes import ORIGIN, PIXEL_M
    from training.train import main as train_main

    work = tmp_path_factory.mktemp("grey16")
    raster, points = grey16_points(work, f"{ORIGIN[0] + 40.25 * PIXEL_M},"
                                         f"{ORIGIN[1] - 20.25 * PIXEL_M},lava\n")
    out = work / "run"
    code, stdout, stderr = run_main(train_main, ["--images", str(raster), "--points", str(points),
                                                 "--csv-crs", "EPSG:32640", "--out", str(out),
                                                 *FAST])
    return out, code, stdout, stderr


def test_a_class_with_few_points_is_a_loud_warning(grey16_run):
    _, code, stdout, stderr = grey16_run
    assert code == 0, stdout + stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert any("'lava'" in w and "1 point" in w and "--classes" in w for w in warnings), stderr


def test_16_bit_single_band_rasters_say_how_they_are_read(grey16_run, work, tmp_path):
    _, code, stdout, stderr = grey16_run
    notes = [line for line in (stdout + stderr).splitlines() if line.startswith("note: ")]
    assert any("uint16" in n and "grey" in n for n in notes), stdout + stderr

    raster, _ = grey16_points(tmp_path)
    code, _, err = run_main(predict_main, [str(raster), str(tmp_path / "o.tif"), "--model",
                                           str(work / "standin.pt"), *FLAGS])
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "uint16" in notes[0] and "grey" in notes[0], err
    assert "stretch" in notes[0]  # the stand-in has no band statistics


def test_metrics_record_what_the_run_used(grey16_run):
    import json

    out, code, stdout, stderr = grey16_run
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["amp"] == "off" and config["device"] == "cpu"
    assert config.get("dataset") is None


def test_a_bad_pretrained_value_is_refused_before_the_points_are_read(tmp_path):
    from training.train import main as train_main

    raster, _ = grey16_points(tmp_path)
    broken = tmp_path / "broken.csv"
    broken.write_text("a,b\n1,2\n")
    code, stdout, stderr = run_main(train_main, [
        "--images", str(raster), "--points", str(broken), "--out", str(tmp_path / "run"),
        "--pretrained", "ImageNet1k", *FAST])
    line = one_line(stderr)
    assert code != 0 and "--pretrained" in line and "ImageNet1k" in line, line
    assert not (tmp_path / "run").exists()


# 7, 10. Points far from every raster: both extents in the one line, and no run folder left.

def test_points_far_from_the_rasters_give_both_extents(tmp_path):
    from tests.scenes import ORIGIN
    from training.train import main as train_main

    raster, _ = grey16_points(tmp_path)
    far = tmp_path / "far.csv"
    far.write_text("x,y,class\n" + "".join(f"{ORIGIN[0] - 5000 + 10 * k},{ORIGIN[1] + 3000},water\n"
                                           for k in range(3)))
    out = tmp_path / "run"
    code, stdout, stderr = run_main(train_main, ["--images", str(raster), "--points", str(far),
                                                 "--csv-crs", "EPSG:32640", "--out", str(out),
                                                 *FAST])
    line = one_line(stderr)
    assert code != 0 and "no usable points" in line
    assert "points' bounds" in line and "rasters' bounds" in line, line
    assert "295000" in line and "300000" in line and "EPSG:32640" in line, line
    assert not out.exists()


# 9. A model that predicts one class everywhere is named as such.

def test_a_model_that_predicts_one_class_is_a_warning(tiny_landcoverai, tmp_path, monkeypatch):
    import training.run.inputs as run_inputs
    import training.train as train_module

    def one_class(*args, **kwargs):
        cm = np.zeros((5, 5), np.int64)
        cm[:, 2] = [10, 20, 30, 40, 50]  # every pixel predicted "woodland"
        return cm

    monkeypatch.setattr(run_inputs, "evaluate_source", one_class)
    code, stdout, stderr = run_main(train_module.main, [
        "--data", str(tiny_landcoverai), "--out", str(tmp_path / "run"), *FAST[:-2]])
    assert code == 0, stdout + stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "woodland" in warnings[0] and "one class" in warnings[0], stderr


# 4. geoseg serve finds the project's config wherever it is run from.

def test_serve_outside_the_repository_uses_the_projects_config(work, tmp_path, monkeypatch):
    import subprocess

    import tools.serve as serve
    from tools.server import BASE_CONFIG

    started: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        started.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.chdir(tmp_path)  # no config.properties here
    monkeypatch.setattr(serve, "build_archive", lambda model, store: Path(store) / "geoseg.mar")
    monkeypatch.setattr(serve, "require_torchserve", lambda: "torchserve")
    monkeypatch.setattr(serve, "serving_env", lambda: {})
    monkeypatch.setattr(serve.subprocess, "run", fake_run)
    monkeypatch.setattr(serve, "wait_ready", lambda *a, **k: None)
    assert serve.main(["--model", str(work / "standin.pt")]) == 0
    config = Path(started[0][started[0].index("--ts-config") + 1])
    assert config.is_absolute() and config == BASE_CONFIG and config.is_file()


def test_serve_without_the_projects_config_says_so(work, tmp_path, monkeypatch, capsys):
    import tools.serve as serve

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve, "BASE_CONFIG", tmp_path / "gone" / "config.properties")
    monkeypatch.setattr(serve, "build_archive", lambda *a: pytest.fail("built an archive"))
    assert serve.main(["--model", str(work / "standin.pt")]) != 0
    line = one_line(capsys.readouterr().err)
    assert "config.properties" in line and "--config" in line


# 11. TorchServe's gRPC ports listen on loopback only, in every config.

@pytest.mark.parametrize("name", ["config.properties", "config.prod.properties"])
def test_grpc_ports_are_bound_to_loopback(name):
    from tools.server import ROOT, read_properties

    config = read_properties(ROOT / name)
    assert config["grpc_inference_address"] == "127.0.0.1"
    assert config["grpc_management_address"] == "127.0.0.1"
