"""The same image gets the same answer bytes whatever it is batched with.

Kernels pick other algorithms for other batch shapes, and a near-tie argmax can flip between
them; the handler therefore runs every micro-batch at one fixed shape (the last one padded).
Checked on the real MobileNetV3 architecture (random weights, exported like a trained model),
on the CPU here and on CUDA where ``GEOSEG_TEST_DEVICE=cuda`` is set (``GEOSEG_TEST_ARCH``
picks another architecture, e.g. ``deeplabv3_resnet50``, whose fp16 kernels on an H100 give a
tile 198 other argmax pixels at batch 4 than at batch 1).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from handler.encode import encode_png
from handler.inference import HandlerConfig, config_predictor, lone_tile_predictor, tile_predictor, warm_up
from handler.tiling import segment_images
from model.artifact import load_artifact, save_artifact
from model.builder import build_model
from model.class_table import ClassTable
from model.export import export_meta, script_model
from training.data.synthetic import generate_scene

DEVICE = torch.device(os.environ.get("GEOSEG_TEST_DEVICE", "cpu"))
ARCH = os.environ.get("GEOSEG_TEST_ARCH", "deeplabv3_mobilenet_v3_large")
TILE, OVERLAP, MICRO_BATCH = 128, 16, 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised ``ARCH`` exported like a trained model, loaded on ``DEVICE`` in
    the served precision: (network, class table)."""
    torch.manual_seed(0)
    table = ClassTable.load()
    path = tmp_path_factory.mktemp("export") / "model.pt"
    net = build_model(ARCH, num_classes=table.num_classes).eval()
    save_artifact(script_model(net), export_meta(table, ARCH), path)
    artifact = load_artifact(path, DEVICE)
    model = artifact.network.half() if DEVICE.type == "cuda" else artifact.network
    return model, artifact.classes


@pytest.fixture(scope="module")
def predictor(exported):
    """Class ids per tile (the hard split's predictor)."""
    model, table = exported
    predict = tile_predictor(model, DEVICE, DEVICE.type == "cuda", channels_last=True)
    warm_up(predict, MICRO_BATCH, TILE)  # what the handler does at start
    return predict, table


@pytest.fixture(scope="module")
def served(exported):
    """The served default: blended class probabilities, with lone tiles answered by the first
    maximum of their logits on the device."""
    model, table = exported
    config = HandlerConfig(tile_size=TILE, tile_overlap=OVERLAP, tile_batch_size=MICRO_BATCH)
    scores, lone = config_predictor(model, DEVICE, config), lone_tile_predictor(model, DEVICE, config)
    assert lone is not None
    for p in (scores, lone):
        warm_up(p, MICRO_BATCH, TILE)
    return scores, lone, table


def test_a_lone_tile_gets_the_same_bytes_beside_lone_tiles_and_beside_a_scene(served, predictor):
    """Served default: a one-tile image batched with other one-tile images and batched with a
    scene's tiles goes to the device argmax in a micro-batch of lone tiles both times, and gets
    the same bytes as the hard split's answer (the same first maximum of the same logits)."""
    scores, lone, table = served
    tile = generate_scene((TILE, TILE), seed=45)[0]
    others = [generate_scene((TILE, TILE), seed=60 + k)[0] for k in range(3)]
    scene = generate_scene((TILE, 2 * TILE), seed=46)[0]
    calls = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return lone(batch)

    on_device = segment_images([tile, *others], scores, TILE, OVERLAP, MICRO_BATCH, lone_ids=counted)
    assert calls == [MICRO_BATCH]  # the four one-tile images went to the device argmax
    beside_scene = segment_images([scene, tile], scores, TILE, OVERLAP, MICRO_BATCH,
                                  lone_ids=counted)
    assert calls == [MICRO_BATCH, MICRO_BATCH]  # beside the scene's tiles: a micro-batch of its own
    assert encode_png(on_device[0], table) == encode_png(beside_scene[1], table)
    assert encode_png(on_device[0], table) == answers(predictor, [tile])[0]


def answers(predictor, images: list[np.ndarray]) -> list[bytes]:
    """The palette-PNG answer bytes of ``images`` segmented together, as one TorchServe batch."""
    predict, table = predictor
    maps = segment_images(images, predict, TILE, OVERLAP, MICRO_BATCH)
    return [encode_png(m, table) for m in maps]


@pytest.mark.parametrize("companions", [1, 2, 3])
def test_a_tile_gets_the_same_bytes_alone_and_in_a_batch(predictor, companions):
    tile = generate_scene((TILE, TILE), seed=41)[0]
    alone = answers(predictor, [tile])[0]
    others = [generate_scene((TILE, TILE), seed=50 + k)[0] for k in range(companions)]
    for position in range(companions + 1):
        batch = others[:position] + [tile] + others[position:]
        assert answers(predictor, batch)[position] == alone, (companions, position)


def test_a_scene_gets_the_same_bytes_alone_and_after_another(predictor):
    """A 3-tile scene after a 1-tile image: its tiles land in other micro-batch slots."""
    scene = generate_scene((TILE, 2 * TILE), seed=43)[0]
    first = generate_scene((TILE, TILE), seed=44)[0]
    assert answers(predictor, [first, scene])[1] == answers(predictor, [scene])[0]


def test_every_forward_pass_has_the_fixed_micro_batch_shape():
    """Padding, not luck: 1, 2, 3, 5 and 9 tiles all reach the model as batches of 4."""
    shapes: list[tuple[int, ...]] = []

    def record(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return np.zeros(batch.shape[:3], np.uint8)

    for count in (1, 2, 3, 5, 9):
        images = [np.zeros((TILE, TILE, 3), np.uint8)] * count
        maps = segment_images(images, record, TILE, OVERLAP, MICRO_BATCH)
        assert len(maps) == count and all(m.shape == (TILE, TILE) for m in maps)
    assert {s for s in shapes} == {(MICRO_BATCH, TILE, TILE, 3)}
