"""Integration: GeoSeg's counters and TorchServe's HandlerTime on a real metrics endpoint.

The server runs the project's config.properties (``metrics_mode=prometheus``,
``model_metrics_auto_detect=true``) on free loopback ports; the test reads
``<metrics_url>/metrics`` before and after a few good and bad requests and compares the
differences with what was sent. Fails (never skips) when Java or TorchServe is missing.
"""
from __future__ import annotations

import time

import pytest

from handler import metrics as geoseg_metrics
from handler.tiling import plan_tiles
from tests.serving import png, post, standin_store
from tools.server import Sample, TorchServe, scrape_metrics
from tools.server import metric_total as total
from training.data.synthetic import generate_scene

TILE, OVERLAP = 64, 16  # the stand-in archive's handler section (tests/serving.py)


def scrape(server: TorchServe) -> list[Sample]:
    return scrape_metrics(server.metrics_url)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("metrics")
    ts = TorchServe(standin_store(work, delay_ms=50), workdir=work / "ts").start(timeout=300)
    yield ts
    ts.stop()


def test_geoseg_counters_and_handler_time_reach_the_metrics_endpoint(server):
    sizes = [(150, 130), (40, 50), (64, 64)]
    before = scrape(server)  # the readiness probe already counted one urlencoded_body error
    for h, w in sizes:
        scene, _ = generate_scene((h, w), seed=h)
        assert post(server, png(scene)).status == 200
    assert post(server, b"not an image").status == 415
    assert post(server, png(scene), headers={"Accept": "text/html"}).status == 406

    tiles = sum(len(plan_tiles(h, w, TILE, OVERLAP)) for h, w in sizes)
    assert tiles == 12 + 1 + 1  # 150x130 with edges reflected by 8: 4 x 3 tiles of 64
    model = {"ModelName": "geoseg", "Level": "Model"}

    def delta(after, name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    deadline = time.monotonic() + 60  # the frontend reads the worker's metric lines async
    while True:
        after = scrape(server)
        done = (delta(after, geoseg_metrics.TILES, **model) >= tiles
                and delta(after, geoseg_metrics.REQUEST_ERRORS, **model) >= 2)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert delta(after, geoseg_metrics.TILES, **model) == tiles
    assert delta(after, geoseg_metrics.MEGAPIXELS, **model) == pytest.approx(
        sum(h * w for h, w in sizes) / 1e6, abs=1e-5)
    assert delta(after, geoseg_metrics.REQUEST_ERRORS, Kind="unsupported_format") == 1
    assert delta(after, geoseg_metrics.REQUEST_ERRORS, Kind="not_acceptable") == 1
    assert delta(after, geoseg_metrics.REQUEST_ERRORS) == 2
    kinds = {lab["Kind"] for n, lab, _ in after if n == geoseg_metrics.REQUEST_ERRORS}
    assert {"unsupported_format", "not_acceptable"} <= kinds
    for stage in geoseg_metrics.STAGES:  # every batch adds its wall time per stage
        assert delta(after, geoseg_metrics.STAGE_MS, Stage=stage) > 0, stage
    handler_time = [v for n, lab, v in after if n == "HandlerTime" and lab.get("ModelName") == "geoseg"]
    assert handler_time and all(v > 0 for v in handler_time)
