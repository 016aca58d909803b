"""The handler's ``compile`` switch: the exported network rebuilt and run through torch.compile,
answering what TorchScript answers, and TorchScript kept when the compiled build disagrees."""
from __future__ import annotations

import pytest

from handler.geoseg_handler import GeoSegHandler
from model.export import main as export_main
from tests.serving import png
from tests.standins import StandInContext, varied_checkpoint
from training.data.synthetic import generate_scene

TILE = {"tile_size": 64, "tile_overlap": 16}
BACKEND = "aot_eager"  # the graph capture and the rebuilt network; TorchInductor's code
# generation takes minutes on a small CPU and is measured by the GPU run instead


@pytest.fixture(scope="module")
def exported(tmp_path_factory, table):
    folder = tmp_path_factory.mktemp("compiled")
    checkpoint = varied_checkpoint(folder / "varied.ckpt", table, 64)
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(folder / "standin.pt")]) == 0
    return folder


def answers(folder, handler_config: dict) -> tuple[GeoSegHandler, list[bytes]]:
    ctx = StandInContext(folder, handler_config=handler_config)
    handler = GeoSegHandler()
    handler.initialize(ctx)
    scenes = [generate_scene((90, 130), seed=s)[0] for s in (3, 4)]
    return handler, handler.handle([{"body": png(scene)} for scene in scenes], ctx)


def test_compiled_network_answers_byte_for_byte_what_torchscript_answers(exported):
    scripted, expected = answers(exported, TILE)
    compiled, got = answers(exported, {**TILE, "compile": BACKEND})
    assert scripted.network_kind == "TorchScript"
    assert compiled.network_kind.startswith(f"torch.compile {BACKEND} (100.00%")
    assert type(compiled.model).__name__ == "OptimizedModule"
    assert got == expected


def test_a_compiled_build_that_disagrees_is_not_served(exported, monkeypatch):
    import model.compiled as compiled_module

    rebuild = compiled_module.eager_network

    def wrong_weights(artifact):  # the right network with its last layer's weights scrambled
        model = rebuild(artifact)
        last = model.net.classifier[-1]
        last.weight.data = last.weight.data.flip(0)
        return model

    monkeypatch.setattr(compiled_module, "eager_network", wrong_weights)
    _, expected = answers(exported, TILE)
    handler, got = answers(exported, {**TILE, "compile": BACKEND})
    assert handler.network_kind.startswith(f"TorchScript (the {BACKEND} build agreed on only")
    assert got == expected
