"""``geoseg predict`` with a model that carries its forest: network and forest map together, a
scene mapped in windows matches the scene mapped in one, and ``--no-forest`` maps with the
network alone."""
from __future__ import annotations

import numpy as np
import rasterio
import torch

from handler.inference import HandlerConfig, config_predictor
from handler.tiling import blended_scores, segment_images
from model.artifact import save_artifact
from model.class_table import ClassTable
from model.export import export_meta
from scene.run import LocalSegmenter, SceneJob, map_scene
from scene.source import SceneSource
from scene.windows import keep_in_read, plan_windows
from tests.scenes import write_scene
from tests.standins import ColourRule
from training.data.synthetic import generate_scene
from training.labels.forest import ForestSamples, ForestSettings, pixel_features
from training.labels.fusion import ForestFusion

CONFIG = HandlerConfig(tile_size=192, tile_overlap=96, channels_last=False)
"""Small tiles with the default overlap: a window has 96 px of context, more than the 72 px the
forest's features need."""


def scene_with_forest(tmp_path):
    """A synthetic scene as a GeoTIFF, its image and mask, and the colour-rule stand-in exported
    with a forest fitted on 10 points per class of that scene."""
    image, mask = generate_scene(480, seed=4)
    raster = write_scene(tmp_path / "scene.tif", np.moveaxis(image, -1, 0).copy(), nodata=None)
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for c in np.unique(mask):
        r, k = np.nonzero(mask == c)
        pick = rng.choice(r.size, min(10, r.size), replace=False)
        rows.append(r[pick])
        cols.append(k[pick])
    r, k = np.concatenate(rows), np.concatenate(cols)
    samples = ForestSamples(pixel_features(image)[r, k], mask[r, k].astype(np.int64),
                            settings=ForestSettings(n_estimators=20, n_jobs=1, random_state=0))
    model = tmp_path / "with-forest.pt"
    save_artifact(torch.jit.script(ColourRule().eval()),
                  export_meta(ClassTable.load(), "colour-rule-standin"), model, samples.to_bytes())
    return raster, image, mask, model, samples


def mapped(raster, model, out, tiles_per_window: int, forest: bool = True) -> np.ndarray:
    map_scene(SceneJob(raster, out), LocalSegmenter(model, "cpu", CONFIG, forest=forest), CONFIG,
              tiles_per_window=tiles_per_window, show_progress=False)
    with rasterio.open(out) as src:
        return src.read(1)


def test_a_model_with_its_forest_maps_network_and_forest_together(tmp_path) -> None:
    raster, image, mask, model, samples = scene_with_forest(tmp_path)
    (window,) = plan_windows(*mask.shape, CONFIG.tile_size, CONFIG.tile_overlap, 20)
    with SceneSource(raster) as source:   # the scene's one window, reflected at its edges
        read = source.rgb(source.read(window.read)[0])
    rows, cols = keep_in_read(window)
    predict = config_predictor(ColourRule().eval(), torch.device("cpu"), CONFIG)
    (probs,) = blended_scores([read], predict, CONFIG.tile_size, CONFIG.tile_overlap, 4,
                              margins=[0])
    expected = ForestFusion(samples, 5).classes(read, probs)[rows, cols]
    whole = mapped(raster, model, tmp_path / "whole.tif", tiles_per_window=20)
    np.testing.assert_array_equal(whole, expected)

    network = mapped(raster, model, tmp_path / "network.tif", tiles_per_window=20, forest=False)
    (alone,) = segment_images([read], predict, CONFIG.tile_size, CONFIG.tile_overlap, 4,
                              margins=[0])
    np.testing.assert_array_equal(network, alone[rows, cols])
    assert (whole != network).mean() > 0.05

    # 9 windows: the forest's probabilities are exact, the regions are each window's own
    windowed = mapped(raster, model, tmp_path / "windows.tif", tiles_per_window=2)
    print(f"windows agree with the whole scene on {100 * (windowed == whole).mean():.3f}% of "
          f"the pixels")
    assert (windowed == whole).mean() > 0.99


def test_predict_says_when_it_maps_with_the_forest(tmp_path, capsys) -> None:
    from scene.cli import main as predict_main

    raster, _, _, model, _ = scene_with_forest(tmp_path)
    common = [str(raster), "--model", str(model), "--device", "cpu", "--tile", "192", "--quiet"]
    assert predict_main([*common[:1], str(tmp_path / "fused.tif"), *common[1:]]) == 0
    said = capsys.readouterr().err
    assert "carries its forest" in said and "--no-forest" in said
    assert predict_main([*common[:1], str(tmp_path / "alone.tif"), *common[1:], "--no-forest"]) == 0
    assert "forest" not in capsys.readouterr().err
