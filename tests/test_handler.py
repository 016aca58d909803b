"""The handler class with a small stand-in for TorchServe's context (no server)."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from handler.geoseg_handler import GeoSegHandler
from tests.serving import png
from tests.standins import ColourRule, write_standin
from training.synthetic import generate_scene


class StandInContext:
    """What GeoSegHandler uses of ts.context.Context, recording statuses and content types."""

    def __init__(self, model_dir, headers=None, handler_config=None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"serializedFile": "standin.pt"}}
        self.model_yaml_config = {"handler": handler_config or {"tile_size": 32, "tile_overlap": 8}}
        self.headers = headers or {}
        self.status, self.content_type = {}, {}

    def get_request_header(self, idx, key):
        return self.headers.get(idx, {}).get(key)

    def set_response_status(self, code, phrase, idx):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value


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
