"""Integration: ``geoseg predict --server`` against a real TorchServe with two workers gives
the same COG, byte for byte, as the local model, and the same classes as one request for the
whole image; a dead replica in the list is retried around. Fails (never skips) when Java or
TorchServe is missing."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import rasterio

from scene.cli import main as predict_main
from tests.scenes import scene_bands, write_scene
from tests.serving import post, standin_store
from tools.server import KEY_FILE, TorchServe

FLAGS = ["--tile", "64", "--overlap", "16", "--tile-batch", "8", "--tiles-per-window", "2",
         "--quiet"]  # the stand-in archive's handler section (tests/serving.py)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("predict-server")
    (work / "shared").mkdir()
    store = standin_store(work, delay_ms=5, workers=2, blur=25,  # sees past the kept centres
                          shared_dir=work / "shared")
    ts = TorchServe(store, workdir=work / "ts").start(timeout=300)
    yield work, ts
    ts.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_mode_equals_local_mode_and_one_request(served, tmp_path):
    work, ts = served
    scene = write_scene(tmp_path / "scene.tif", scene_bands(420, 530, seed=5))
    local, remote = tmp_path / "local.tif", tmp_path / "remote.tif"
    assert predict_main([str(scene), str(local), "--model", str(work / "standin.pt"),
                         *FLAGS]) == 0
    dead = f"http://127.0.0.1:{closed_port()}"
    assert predict_main([str(scene), str(remote), "--server", ts.url, "--server", dead,
                         "--concurrency", "4", "--token-file", str(ts.workdir / KEY_FILE),
                         *FLAGS]) == 0
    assert remote.read_bytes() == local.read_bytes()

    whole = post(ts, scene.read_bytes(), headers={"Content-Type": "image/tiff",
                                                  "X-GeoSeg-Format": "geotiff"})
    assert whole.status == 200
    with rasterio.MemoryFile(whole.body) as mem, mem.open() as src:
        expected = src.read(1)
    with rasterio.open(remote) as src:
        got = src.read(1)
    assert len(np.unique(expected)) >= 4 and (expected == 255).any()
    np.testing.assert_array_equal(got, expected)


def test_windows_through_the_shared_folder_give_the_same_map_and_leave_no_file(
        served, tmp_path, capsys):
    work, ts = served
    scene = write_scene(tmp_path / "scene.tif", scene_bands(300, 260, seed=8))
    by_http, by_files = tmp_path / "http.tif", tmp_path / "files.tif"
    key = ["--token-file", str(ts.workdir / KEY_FILE)]
    assert predict_main([str(scene), str(by_http), "--server", ts.url, *key, *FLAGS]) == 0
    assert predict_main([str(scene), str(by_files), "--server", ts.url, *key, "--concurrency", "3",
                         "--shared-dir", str(work / "shared"), *FLAGS]) == 0
    assert by_files.read_bytes() == by_http.read_bytes()
    assert list((work / "shared").iterdir()) == []  # every window's two files removed
    capsys.readouterr()
    elsewhere = tmp_path / "not-the-servers"
    elsewhere.mkdir()
    assert predict_main([str(scene), str(tmp_path / "x.tif"), "--server", ts.url, *key,
                         "--shared-dir", str(elsewhere), *FLAGS]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "X-GeoSeg-Shared-Input" in err[0], err  # the server's own words
    assert predict_main([str(scene), str(tmp_path / "y.tif"), "--model", str(work / "standin.pt"),
                         "--shared-dir", str(elsewhere), *FLAGS]) != 0
    assert "--shared-dir is for --server" in capsys.readouterr().err


def test_without_the_key_the_run_stops_with_one_line_and_finds_it_where_the_server_runs(
        served, tmp_path, capsys, monkeypatch):
    _, ts = served
    scene = write_scene(tmp_path / "scene.tif", scene_bands(200, 200, seed=2))
    monkeypatch.chdir(tmp_path)  # no key_file.json here
    assert predict_main([str(scene), str(tmp_path / "o.tif"), "--server", ts.url, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "without an inference key" in err and "--token-file" in err and len(err.splitlines()) == 1
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-key\n")
    assert predict_main([str(scene), str(tmp_path / "o.tif"), "--server", ts.url, "--quiet",
                         "--token-file", str(wrong)]) == 1
    assert "wrong or expired inference key" in capsys.readouterr().err
    monkeypatch.chdir(ts.workdir)  # where TorchServe wrote key_file.json: found by itself
    assert predict_main([str(scene), str(tmp_path / "o.tif"), "--server", ts.url, "--quiet"]) == 0


def test_a_server_error_stops_the_run_with_its_message(served, tmp_path, capsys, monkeypatch):
    _, ts = served
    monkeypatch.chdir(ts.workdir)  # the key from the server's key_file.json
    scene = write_scene(tmp_path / "big.tif", scene_bands(1100, 1100, seed=1))  # > 1 Mpx limit
    assert predict_main([str(scene), str(tmp_path / "o.tif"), "--server", ts.url,
                         "--tiles-per-window", "40", "--tile", "64", "--overlap", "16",
                         "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "413" in err and "exceeds the limit" in err and len(err.splitlines()) == 1
