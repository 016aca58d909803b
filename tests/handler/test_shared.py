"""Requests through a shared folder (handler/shared.py): the same answers as HTTP bodies, only
bare names of regular files in the folder, off unless the server names a folder."""
from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from handler.errors import RequestError
from handler.geoseg_handler import GeoSegHandler
from handler.inference import HandlerConfig
from handler.shared import ANSWER_HEADER, INPUT_HEADER, SharedFolder
from tests.helpers import png_bytes
from tests.standins import StandInContext, write_standin
from training.data.synthetic import generate_scene


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture()
def served(tmp_path: Path):
    """A handler on the stand-in whose shared folder is ``tmp_path / "shared"``; returns
    (handler, model folder, shared folder)."""
    model_dir, shared = tmp_path / "model", tmp_path / "shared"
    model_dir.mkdir()
    shared.mkdir()
    write_standin(model_dir / "standin.pt")
    config = {"tile_size": 64, "tile_overlap": 16, "shared_dir": str(shared)}
    handler = GeoSegHandler()
    handler.initialize(StandInContext(model_dir, handler_config=config))
    return handler, model_dir, shared, config


def ask(handler: GeoSegHandler, model_dir: Path, config: dict, rows: list[dict],
        headers: dict[int, dict[str, str]]) -> tuple[list[bytes], StandInContext]:
    ctx = StandInContext(model_dir, headers=headers, handler_config=config)
    handler.context = ctx
    return handler.handle(rows, ctx), ctx


def test_a_shared_file_is_answered_as_its_body_would_be(served) -> None:
    handler, model_dir, shared, config = served
    stack = np.stack([generate_scene((100, 120), seed=s)[0] for s in (1, 2)])
    (shared / "stack.npy").write_bytes(npy(stack))
    (shared / "tile.png").write_bytes(png_bytes(stack[0]))
    (by_body, from_file, png_file), ctx = ask(
        handler, model_dir, config, [{"body": npy(stack)}, {"body": b""}, {}],
        {1: {INPUT_HEADER: "stack.npy"}, 2: {INPUT_HEADER: "tile.png", "Accept": "application/x-npy"}})
    assert ctx.status == {} and ctx.content_type[1] == "application/x-npy"
    assert from_file == by_body
    classes = np.load(io.BytesIO(by_body), allow_pickle=False)
    assert classes.shape == (2, 100, 120) and len(np.unique(classes)) >= 2
    assert np.array_equal(np.load(io.BytesIO(png_file), allow_pickle=False), classes[0])


def test_an_answer_file_holds_the_body_and_the_response_says_where(served) -> None:
    handler, model_dir, shared, config = served
    rgb, _ = generate_scene((90, 70), seed=4)
    (shared / "in.npy").write_bytes(npy(rgb))
    (body, response), ctx = ask(
        handler, model_dir, config, [{"body": npy(rgb)}, {}],
        {0: {"Accept": "application/x-npy"},
         1: {INPUT_HEADER: "in.npy", ANSWER_HEADER: "out.npy", "Accept": "application/x-npy"}})
    assert ctx.content_type[1] == "application/json"
    assert json.loads(response) == {"answer_file": "out.npy", "bytes": len(body),
                                    "content_type": "application/x-npy"}
    assert (shared / "out.npy").read_bytes() == body
    assert sorted(os.listdir(shared)) == ["in.npy", "out.npy"]  # no partial file left


@pytest.mark.parametrize("headers, status, kind", [
    ({INPUT_HEADER: "../model/standin.pt"}, 400, "shared_name"),
    ({INPUT_HEADER: ".hidden"}, 400, "shared_name"),
    ({INPUT_HEADER: "/etc/passwd"}, 400, "shared_name"),
    ({INPUT_HEADER: "missing.npy"}, 400, "shared_missing"),
    ({INPUT_HEADER: "link.npy"}, 400, "shared_missing"),  # a symbolic link is not followed
    ({INPUT_HEADER: "folder"}, 400, "shared_missing"),
    ({INPUT_HEADER: "pipe"}, 400, "shared_missing"),  # a FIFO would block the worker's read
    ({INPUT_HEADER: "in.npy", ANSWER_HEADER: "a/b.npy"}, 400, "shared_name"),
])
def test_only_regular_files_named_bare_in_the_folder_are_read(served, headers, status,
                                                               kind) -> None:
    handler, model_dir, shared, config = served
    rgb, _ = generate_scene((40, 40), seed=5)
    (shared / "in.npy").write_bytes(npy(rgb))
    (shared / "folder").mkdir()
    (shared / "link.npy").symlink_to(shared / "in.npy")
    os.mkfifo(shared / "pipe")
    (answer,), ctx = ask(handler, model_dir, config, [{}], {0: headers})
    error = json.loads(answer)
    assert ctx.status == {0: status} and error["detail"]["kind"] == kind, error
    assert len(error["error"].splitlines()) == 1
    assert not (shared / "a").exists()


def test_a_server_without_a_shared_folder_refuses_shared_requests(tmp_path: Path) -> None:
    write_standin(tmp_path / "standin.pt")
    (tmp_path / "in.npy").write_bytes(npy(np.zeros((8, 8, 3), np.uint8)))
    handler = GeoSegHandler()
    handler.initialize(StandInContext(tmp_path))
    for header in (INPUT_HEADER, ANSWER_HEADER):
        ctx = StandInContext(tmp_path, headers={0: {header: "in.npy"}})
        handler.context = ctx
        (answer,) = handler.handle([{"body": npy(np.zeros((8, 8, 3), np.uint8))}], ctx)
        assert ctx.status == {0: 400} and json.loads(answer)["detail"]["kind"] == "shared_off"


def test_an_answer_that_cannot_be_written_is_a_500_not_a_retry(served) -> None:
    handler, model_dir, shared, config = served
    (shared / "in.npy").write_bytes(npy(np.zeros((8, 8, 3), np.uint8)))
    (shared / "taken").mkdir()  # a folder where the answer file should go: rename fails
    (answer,), ctx = ask(handler, model_dir, config, [{}],
                         {0: {INPUT_HEADER: "in.npy", ANSWER_HEADER: "taken"}})
    assert ctx.status == {0: 500} and json.loads(answer)["detail"]["kind"] == "shared_write"
    assert sorted(os.listdir(shared)) == ["in.npy", "taken"]


def test_an_oversized_shared_file_is_refused_before_it_is_read(tmp_path: Path,
                                                               monkeypatch) -> None:
    from handler import shared as shared_module

    (tmp_path / "big.npy").write_bytes(b"\x00" * 1000)
    monkeypatch.setattr(shared_module, "MAX_FILE_BYTES", 999)
    with pytest.raises(RequestError) as caught:
        SharedFolder(tmp_path).read("big.npy")
    assert caught.value.status == 413


def test_the_shared_folder_setting_must_be_absolute() -> None:
    assert HandlerConfig.from_mapping({"shared_dir": "/dev/shm/geoseg"}).shared_dir == "/dev/shm/geoseg"
    with pytest.raises(ValueError):
        HandlerConfig.from_mapping({"shared_dir": "relative/folder"})


def test_a_file_is_read_whole_and_one_byte_past_its_size_at_most(tmp_path: Path) -> None:
    from handler.shared import read_up_to

    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    (tmp_path / "in.npy").write_bytes(data)
    assert SharedFolder(tmp_path).read("in.npy") == data
    reader, writer = os.pipe()  # a pipe hands its bytes over in the pieces written
    try:
        os.write(writer, b"first ")
        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: (time.sleep(0.2), os.write(writer, b"and second part")))
            assert read_up_to(reader, 10) == b"first and "  # the short first read goes on
        os.close(writer)
        writer = -1
        assert read_up_to(reader, 100) == b"second part"  # fewer at the end
        assert read_up_to(reader, 100) == b""
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)
