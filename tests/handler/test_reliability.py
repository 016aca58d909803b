"""Reliability through a real TorchServe: bad input, fuzzing, over-size bodies, stopping.

After every refused request the worker must still be the same healthy process (``/ping``,
the same pid) and answer a good request exactly as before.
"""
import hashlib
import io
import os
import subprocess
import threading
import time

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from handler.decode import bands_to_rgb, to_uint8
from tests.bad_inputs import bad_requests
from tests.helpers import SEEDS, geotiff_bytes, mutate, mutation
from tests.serving import Reply, announce_upload, mask_of, ping, png, post, standin_store
from tools.server import TorchServe, torchserve_executable
from training.data.synthetic import generate_scene

MAX_REQUEST_BYTES = 4 * 1024 * 1024
SCENE, _ = generate_scene((150, 130), seed=9)
OTHER, _ = generate_scene((150, 130), seed=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("reliability")
    ts = TorchServe(standin_store(work, delay_ms=50), workdir=work / "ts",
                    extra_config={"max_request_size": MAX_REQUEST_BYTES})
    yield ts.start(timeout=300)
    ts.stop()


@pytest.fixture(scope="module")
def reference(server) -> np.ndarray:
    """The served mask of SCENE, taken once, alone."""
    reply = post(server, png(SCENE))
    assert reply.status == 200
    return mask_of(reply.body)


def assert_still_healthy(server: TorchServe, pid: int, reference: np.ndarray) -> None:
    assert ping(server) == "Healthy"
    assert server.worker_pid() == pid, "the worker process was replaced: it crashed"
    reply = post(server, png(SCENE))
    assert reply.status == 200
    np.testing.assert_array_equal(mask_of(reply.body), reference)


BAD = bad_requests(SCENE)


@pytest.mark.parametrize("name, body, headers, form, status, kind", BAD, ids=[b.name for b in BAD])
def test_bad_input_gets_its_4xx_json_and_the_worker_stays_healthy(
        server, reference, name, body, headers, form, status, kind):
    pid = server.worker_pid()
    reply = post(server, body, headers, form)
    assert (reply.status, reply.content_type) == (status, "application/json"), reply.body[:300]
    error = reply.json()
    assert error["code"] == status and error["detail"]["kind"] == kind and error["error"]
    assert_still_healthy(server, pid, reference)


def served_mask(server: TorchServe, body: bytes) -> np.ndarray:
    reply = post(server, body)
    assert (reply.status, reply.content_type) == (200, "image/png"), reply.body[:300]
    return mask_of(reply.body)


def tiff(pages: list[np.ndarray], **kwargs) -> bytes:
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as writer:
        for page in pages:
            writer.write(page, **kwargs)
    return buf.getvalue()


def gif(frames: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=100)
    return buf.getvalue()


def pillow_rgb(data: bytes) -> np.ndarray:
    """What Pillow itself makes of an image's first frame, as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_odd_but_valid_images_follow_the_documented_rules(server, reference):
    """Each is served like the 8-bit RGB image the README's decoding rules turn it into."""
    pid = server.worker_pid()
    rng = np.random.default_rng(4)
    bands16 = np.moveaxis(SCENE, -1, 0).astype(np.uint16) * 200 + 1000
    floats = np.moveaxis(SCENE, -1, 0).astype(np.float32) / 7.0
    floats[0, :3, :3] = np.nan
    extra = rng.integers(0, 256, (2, 150, 130), dtype=np.uint8)
    five_bands = np.concatenate([np.moveaxis(SCENE, -1, 0), extra])
    cmyk = io.BytesIO()
    Image.fromarray(SCENE).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    animated = gif([SCENE, OTHER])
    cases = {
        "16-bit TIFF": (tiff([np.moveaxis(bands16, 0, -1)]), bands_to_rgb(to_uint8(bands16))),
        "float TIFF with NaN": (geotiff_bytes(floats), bands_to_rgb(to_uint8(floats))),
        "5-band TIFF: bands 1-3": (geotiff_bytes(five_bands), SCENE),
        "CMYK JPEG": (cmyk.getvalue(), pillow_rgb(cmyk.getvalue())),
        "animated GIF: first frame": (animated, pillow_rgb(animated)),
        "multi-page TIFF: first page": (tiff([SCENE, OTHER]), SCENE),
    }
    for name, (data, rgb) in cases.items():
        np.testing.assert_array_equal(served_mask(server, data), served_mask(server, png(rgb)),
                                      err_msg=name)
    # The first frame / page is taken, not the last: the two give different maps.
    assert not np.array_equal(served_mask(server, png(OTHER)), reference)
    assert served_mask(server, png(SCENE[:1, :1])).shape == (1, 1)
    assert_still_healthy(server, pid, reference)


def test_fuzzed_images_never_get_5xx_nor_crash_the_worker(server, reference):
    pid = server.worker_pid()
    seen: dict[int, int] = {}

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.sampled_from(range(len(SEEDS))), ops=st.lists(mutation, min_size=1,
                                                                  max_size=4))
    def send_mutated(seed, ops):
        reply = post(server, mutate(SEEDS[seed], ops))
        seen[reply.status] = seen.get(reply.status, 0) + 1
        assert reply.status < 500, reply.body[:300]
        if reply.status != 200:
            assert reply.json()["code"] == reply.status

    send_mutated()
    assert sum(seen.values()) >= 60
    assert_still_healthy(server, pid, reference)


def test_over_size_body_gets_413_and_requests_beside_it_succeed(server, reference):
    pid = server.worker_pid()
    replies: list[Reply] = []
    stop = threading.Event()

    def good_requests():
        while not stop.is_set():
            replies.append(post(server, png(SCENE)))

    threads = [threading.Thread(target=good_requests) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        refused = [announce_upload(server, MAX_REQUEST_BYTES + 1024) for _ in range(3)]
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert refused == [413, 413, 413]
    assert replies and all(r.status == 200 for r in replies)
    for r in replies:
        np.testing.assert_array_equal(mask_of(r.body), reference)
    assert_still_healthy(server, pid, reference)


def store_digest(store) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.iterdir())}


def test_stopping_with_requests_in_flight_leaves_the_model_store_intact(tmp_path):
    store = standin_store(tmp_path, delay_ms=50)
    before = store_digest(store)
    ts = TorchServe(store, workdir=tmp_path / "ts").start(timeout=300)
    big = png(np.random.default_rng(3).integers(0, 256, (1000, 1000, 3), dtype=np.uint8))
    in_flight, outcomes = [0], []
    lock = threading.Lock()

    def client():
        for _ in range(20):
            with lock:
                in_flight[0] += 1
            try:
                outcomes.append(post(ts, big, timeout=60).status)
            except OSError as exc:  # the server went away mid-request
                outcomes.append(type(exc).__name__)
                return
            finally:
                with lock:
                    in_flight[0] -= 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        with lock:
            assert in_flight[0] > 0
        # What `make stop` does: `torchserve --stop` finds the server by its pid file.
        env = {**os.environ, "TMPDIR": str(ts.workdir / "tmp")}
        subprocess.run([torchserve_executable(), "--stop"], env=env, check=True, timeout=60,
                       capture_output=True)
        for t in threads:
            t.join(120)
    finally:
        ts.stop()
    assert store_digest(store) == before
    again = TorchServe(store, workdir=tmp_path / "ts2").start(timeout=300)
    try:
        assert post(again, png(SCENE)).status == 200
        assert again.workers()[0]["status"] == "READY"
    finally:
        again.stop()
