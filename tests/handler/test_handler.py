"""The handler class with a small stand-in for TorchServe's context (no server)."""
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handler import metrics as geoseg_metrics
from handler.geoseg_handler import GeoSegHandler
from handler.tiling import plan_tiles
from tests.serving import png
from tests.standins import ColourRule, StandInContext, write_standin
from training.data.synthetic import generate_scene


@pytest.fixture()
def served(tmp_path):
    write_standin(tmp_path / "standin.pt")
    return tmp_path


def test_batch_with_a_bad_request_answers_each_on_its_own(served):
    scene, _ = generate_scene((70, 90), seed=1)
    ctx = StandInContext(served, headers={2: {"Accept": "application/json"}})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    rows = [{"body": png(scene)}, {"body": b"not an image"}, {"file": png(scene)},
            {"file": png(scene), "format": b"bmp"}]
    out = handler.handle(rows, ctx)
    assert len(out) == 4
    assert ctx.status == {1: 415, 3: 400}
    assert json.loads(out[1])["code"] == 415 and json.loads(out[3])["code"] == 400
    assert ctx.content_type[0] == "image/png" and ctx.content_type[2] == "application/json"
    with Image.open(io.BytesIO(out[0])) as im:
        classes = np.asarray(im)
    assert classes.shape == (70, 90)
    summary = json.loads(out[2])
    assert sum(c["pixels"] for c in summary["classes"]) == 70 * 90
    counts = np.bincount(classes.reshape(-1), minlength=5)
    assert [c["pixels"] for c in summary["classes"]] == counts.tolist()


def test_handler_output_equals_the_model_run_whole(served):
    import torch

    scene, _ = generate_scene((64, 64), seed=2)
    ctx = StandInContext(served, handler_config={"tile_size": 64, "tile_overlap": 8})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    (body,) = handler.handle([{"body": png(scene)}], ctx)
    with Image.open(io.BytesIO(body)) as im:
        served_classes = np.asarray(im)
    x = torch.from_numpy(scene).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = ColourRule()(x)["out"].argmax(1)[0].numpy()
    np.testing.assert_array_equal(served_classes, expected)


def test_unknown_handler_config_key_is_refused(served):
    with pytest.raises(ValueError, match="unknown keys"):
        GeoSegHandler().initialize(StandInContext(served, handler_config={"tile": 3}))


def test_handle_is_torchserves_and_records_handler_time_and_geoseg_counters(served):
    scene, _ = generate_scene((70, 90), seed=1)
    ctx = StandInContext(served)  # 32 px tiles, overlap 8
    handler = GeoSegHandler()
    handler.initialize(ctx)
    assert "handle" not in vars(GeoSegHandler)  # BaseHandler.handle drives the batch
    rows = [{"body": png(scene)}, {"body": b"not an image"}, {"body": png(scene[:20, :30])},
            {"body": b""}]
    out = handler.handle(rows, ctx)
    assert len(out) == 4 and ctx.status == {1: 415, 3: 400}
    assert [t[0] for t in ctx.metrics.times] == ["HandlerTime"]
    tiles = len(plan_tiles(70, 90, 32, 8)) + len(plan_tiles(20, 30, 32, 8))
    assert ctx.metrics.total(geoseg_metrics.TILES) == tiles
    assert ctx.metrics.total(geoseg_metrics.MEGAPIXELS) == pytest.approx((70 * 90 + 20 * 30) / 1e6)
    assert ctx.metrics.total(geoseg_metrics.REQUEST_ERRORS, Kind="corrupt") \
        + ctx.metrics.total(geoseg_metrics.REQUEST_ERRORS, Kind="unsupported_format") == 1
    assert ctx.metrics.total(geoseg_metrics.REQUEST_ERRORS, Kind="empty") == 1
    assert ctx.metrics.total(geoseg_metrics.REQUEST_ERRORS) == 2
    for name, _, idx, dims in ctx.metrics.counters:
        assert dims["ModelName"] == "geoseg" and dims["Level"] == "Model"
        assert (idx in (1, 3)) == (name == geoseg_metrics.REQUEST_ERRORS)


def test_explanations_are_answered_like_predictions_one_per_request(served):
    scene, _ = generate_scene((40, 40), seed=3)
    ctx = StandInContext(served, headers={0: {"explain": "True"}})
    handler = GeoSegHandler()
    handler.initialize(ctx)
    plain = GeoSegHandler()
    plain.initialize(StandInContext(served))
    rows = [{"body": png(scene)}, {"body": b"broken"}]
    out = handler.handle(rows, ctx)
    assert len(out) == 2 and ctx.status == {1: 415}
    assert out[0] == plain.handle([{"body": png(scene)}], plain.context)[0]


def test_counters_go_through_torchserves_own_metric_cache(served, caplog):
    """The real ts.metrics cache accepts GeoSeg's calls (it only logs a failure, so read the log)."""
    import ts
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    cache = MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    cache.initialize_cache()
    cache.model_name = "geoseg"
    cache.set_request_ids({0: "req-a", 1: "req-b"})
    ctx = StandInContext(served, metrics=cache)
    handler = GeoSegHandler()
    handler.initialize(ctx)
    scene, _ = generate_scene((40, 50), seed=4)
    with caplog.at_level(logging.INFO, logger="ts.metrics.caching_metric"):
        handler.handle([{"body": png(scene)}, {"body": b"x"}], ctx)
    lines = [r.getMessage() for r in caplog.records if "[METRICS]" in r.getMessage()]
    assert not [line for line in lines if "Failed" in line], lines
    tiles = len(plan_tiles(40, 50, 32, 8))
    assert any(line.startswith(f"[METRICS]GeoSegTiles.Count:{tiles}|#ModelName:geoseg,Level:Model|")
               and line.endswith(",req-a") for line in lines), lines
    assert any(line.startswith("[METRICS]GeoSegMegapixels.Megapixels:0.002|") for line in lines)
    assert any(line.startswith("[METRICS]GeoSegRequestErrors.Count:1|#Kind:")
               and line.endswith(",req-b") for line in lines), lines
    assert any(line.startswith("[METRICS]HandlerTime.Milliseconds:") for line in lines), lines
