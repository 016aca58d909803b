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
