"""Integration: a real TorchServe on loopback serving a small archive, over real HTTP.

Fails (never skips) when Java or TorchServe is missing: the message says what to install.
"""
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import psutil
import pytest
import tifffile
from PIL import Image

from benchmarks.responses import npy_bytes
from handler.metrics import TILES
from handler.shared import ANSWER_HEADER, INPUT_HEADER
from tests.handler.test_codecs import geotiff_bytes
from tests.serving import mask_of, png, post, standin_store
from tools.server import TorchServe, metric_total, scrape_metrics
from training.data.synthetic import generate_scene


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory):
    """The server's shared folder (handler.shared)."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_folder):
    work = tmp_path_factory.mktemp("serve")
    ts = TorchServe(standin_store(work, shared_dir=shared_folder), workdir=work / "ts").start(timeout=300)
    yield ts
    ts.stop()
    assert ts.process.returncode is not None


SCENE, _ = generate_scene((150, 130), seed=9)  # several 64 px tiles


def test_raw_png_gives_palette_png_of_input_size(server):
    status, ctype, body = post(server, png(SCENE))
    assert (status, ctype) == (200, "image/png")
    assert mask_of(body).shape == (150, 130)


def test_multipart_file_and_jpeg_input(server):
    status, ctype, body = post(server, b"", form={"file": png(SCENE, "JPEG")})
    assert (status, ctype) == (200, "image/png")
    assert mask_of(body).shape == (150, 130)


def test_raw_and_multipart_answers_agree(server):
    raw = mask_of(post(server, png(SCENE))[2])
    form = mask_of(post(server, b"", form={"file": png(SCENE)})[2])
    np.testing.assert_array_equal(raw, form)


def test_geotiff_in_geotiff_out_keeps_georeferencing(server):
    data = geotiff_bytes(np.moveaxis(SCENE, -1, 0).copy())
    status, ctype, body = post(server, data, headers={"Accept": "image/tiff"})
    assert (status, ctype) == (200, "image/tiff")
    with tifffile.TiffFile(io.BytesIO(body)) as out, tifffile.TiffFile(io.BytesIO(data)) as src:
        assert out.pages[0].tags[33922].value == src.pages[0].tags[33922].value
        assert out.pages[0].tags[34735].value == src.pages[0].tags[34735].value
        assert out.asarray().shape == (150, 130)


def test_json_summary_with_areas(server):
    data = geotiff_bytes(np.moveaxis(SCENE, -1, 0).copy())
    status, ctype, body = post(server, b"", form={"file": data, "format": b"json"})
    assert (status, ctype) == (200, "application/json")
    summary = json.loads(body)
    assert sum(c["pixels"] for c in summary["classes"]) == 150 * 130
    assert summary["pixel_area_m2"] == pytest.approx(0.25)


def test_overlay_by_header(server):
    status, ctype, body = post(server, png(SCENE), headers={"X-GeoSeg-Format": "overlay"})
    assert (status, ctype) == (200, "image/jpeg")
    with Image.open(io.BytesIO(body)) as im:
        assert im.size == (130, 150)


@pytest.mark.parametrize("data, headers, form, status", [
    (b"", {}, None, 400),
    (b"plain text, not an image", {}, None, 415),
    (None, {}, {"image": b"x"}, 400),
    (None, {"Accept": "text/html"}, None, 406),
    (None, {}, {"file": None, "format": b"bmp"}, 400),
])
def test_input_faults_give_json_4xx_and_worker_keeps_serving(server, data, headers, form, status):
    if form is not None:
        form = {k: (png(SCENE) if v is None else v) for k, v in form.items()}
    got, ctype, body = post(server, png(SCENE) if data is None else data, headers, form)
    assert got == status and ctype == "application/json"
    assert json.loads(body)["code"] == status
    assert post(server, png(SCENE))[0] == 200


def test_form_urlencoded_body_is_explained(server):
    # TorchServe's own form decoder answers 500 before the handler when a '%' is not followed
    # by hex digits; a body without '%' reaches the handler, which must explain the fix.
    data = png(np.zeros((20, 20, 3), np.uint8))
    assert b"%" not in data
    status, _, body = post(server, data,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "curl -T" in json.loads(body)["error"]


def test_too_many_pixels_gives_413(server):
    big = np.zeros((1001, 1000, 3), np.uint8)
    assert post(server, png(big))[0] == 413


def test_concurrent_requests_share_a_batch_and_a_bad_one_harms_none(server):
    results = {}
    bodies = {0: png(SCENE), 1: b"broken", 2: png(SCENE[:70, :90]), 3: png(SCENE)}
    barrier = threading.Barrier(len(bodies))

    def send(k):
        barrier.wait()
        results[k] = post(server, bodies[k])

    threads = [threading.Thread(target=send, args=(k,)) for k in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert results[1][0] == 415
    assert [results[k][0] for k in (0, 2, 3)] == [200, 200, 200]
    assert mask_of(results[2][2]).shape == (70, 90)
    np.testing.assert_array_equal(mask_of(results[0][2]), mask_of(results[3][2]))
    log = (server.workdir / "logs" / "model_log.log").read_text()
    assert "batch of 4 requests, 3 valid" in log or "batch of 3 requests, 2 valid" in log


def test_explanations_endpoint_is_answered_like_predictions(server):
    # TorchServe's explain path (taken for a whole batch) must still answer one map per request.
    def explain(data):
        req = urllib.request.Request(f"{server.url}/explanations/geoseg", data=data,
                                     headers={"Content-Type": "application/octet-stream",
                                              **server.auth()})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type"), exc.read()

    status, ctype, body = explain(png(SCENE))
    assert (status, ctype) == (200, "image/png")
    np.testing.assert_array_equal(mask_of(body), mask_of(post(server, png(SCENE))[2]))
    status, ctype, body = explain(b"not an image")
    assert (status, ctype) == (415, "application/json") and json.loads(body)["code"] == 415


def test_a_stack_of_tiles_is_answered_as_one_npy_of_class_maps(server):
    """The bulk format's stack over real HTTP: (N, H, W, 3) in, (N, H, W) out, each map the
    one its tile gets alone."""
    tiles = np.stack([SCENE[:64, :64], SCENE[64:128, :64], SCENE[:64, 64:128]])
    status, ctype, body = post(server, npy_bytes(tiles), {"Content-Type": "application/x-npy"})
    assert (status, ctype) == (200, "application/x-npy")
    classes = np.load(io.BytesIO(body), allow_pickle=False)
    assert classes.shape == (3, 64, 64)
    for tile, answer in zip(tiles, classes):
        np.testing.assert_array_equal(answer, mask_of(post(server, png(tile))[2]))
    status, _, body = post(server, npy_bytes(tiles), {"Accept": "image/png"})
    assert status == 400 and "stack of 3 images" in json.loads(body)["error"]


def test_a_shared_file_is_answered_over_http_as_its_body_is(server, shared_folder):
    """A request naming its pixels and its answer in the shared folder (an empty body): the
    answer file holds the bytes the body request gets."""
    tiles = np.stack([SCENE[:64, :64], SCENE[64:128, :64]])
    (shared_folder / "tiles.npy").write_bytes(npy_bytes(tiles))
    status, ctype, by_body = post(server, npy_bytes(tiles), {"Content-Type": "application/x-npy"})
    assert (status, ctype) == (200, "application/x-npy")
    status, ctype, body = post(server, b"", {INPUT_HEADER: "tiles.npy", ANSWER_HEADER: "answer.npy"})
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"answer_file": "answer.npy", "bytes": len(by_body),
                                "content_type": "application/x-npy"}
    assert (shared_folder / "answer.npy").read_bytes() == by_body
    status, ctype, body = post(server, b"", {INPUT_HEADER: "tiles.npy"})  # answered in the body
    assert (status, ctype, body) == (200, "application/x-npy", by_body)
    status, _, body = post(server, b"", {INPUT_HEADER: "../tiles.npy"})
    assert status == 400 and json.loads(body)["detail"]["kind"] == "shared_name"


def test_the_workers_threads_spin_briefly_before_they_sleep(server):
    """Its OpenMP threads must not spin on the cores the frontend and the clients need."""
    worker = psutil.Process(server.worker_pid())
    assert worker.environ().get("GOMP_SPINCOUNT") == "1000"


def test_the_frontend_logs_no_line_per_request_and_still_counts_metrics(server):
    """TorchServe's built-in logging writes about 27 lines per request to ts_log.log (its DEBUG
    lines twice, every metric line the worker prints echoed); the project's log4j2.xml only what
    the worker prints. The access log keeps its line per request and the metrics still reach
    Prometheus."""
    logs = server.workdir / "logs"

    def lines(name: str) -> int:
        return (logs / name).read_text().count("\n")

    def tiles() -> float:
        return metric_total(scrape_metrics(server.metrics_url), TILES)

    ts_log, access, counted = lines("ts_log.log"), lines("access_log.log"), tiles()
    for _ in range(8):
        assert post(server, png(SCENE[:64, :64]))[0] == 200
    deadline = time.monotonic() + 10  # the frontend reads the worker's metric lines as they come
    while tiles() < counted + 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tiles() == counted + 8
    assert lines("access_log.log") - access >= 8  # and the scrapes of the metrics
    assert lines("ts_log.log") - ts_log <= 2 * 8  # the worker's own two lines per batch


def test_a_port_taken_between_choosing_and_binding_gets_a_second_start(tmp_path):
    """Ports are chosen free, then bound by TorchServe seconds later; another process may
    take one in between. The start then tries once more on new ports."""
    import socket

    from tools.server import free_ports

    assert len(set(free_ports(50))) == 50  # chosen together: never the same port twice
    ts = TorchServe(standin_store(tmp_path, delay_ms=5), workdir=tmp_path / "ts")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ts.ports["grpc_inference"]))
        taken.listen()
        first = dict(ts.ports)
        ts.start(timeout=300)
    try:
        assert ts.ports["grpc_inference"] != first["grpc_inference"]
        assert post(ts, png(SCENE)).status == 200
    finally:
        ts.stop()
