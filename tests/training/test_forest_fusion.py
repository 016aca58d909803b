"""The map of network and forest together: the forest refitted from the samples a run keeps,
carried through checkpoint and export, scored at the end of training and by ``geoseg
evaluate``."""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.artifact import load_artifact
from model.export import export_checkpoint
from training.experiments.fusion_grid import view_probabilities
from training.labels.forest import (
    ForestSamples,
    ForestSettings,
    class_probabilities,
    image_probabilities,
    pixel_features,
)
from training.labels.fusion import (
    FOREST_TREES,
    FOREST_WEIGHT,
    REGION_SCALES,
    REGION_WEIGHT,
    ForestFusion,
)
from training.labels.segments import image_segments, region_blend, segment_mean
from training.run.evaluate import load_with_forest
from training.run.evaluate import main as evaluate_main
from training.train import main as train_main

SMALL_FOREST = ForestSettings(n_estimators=20, n_jobs=1, random_state=0)


def two_field_photo(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A photo of a green left half and a sandy right half with some texture, and its mask
    (class 0 left, 1 right)."""
    rng = np.random.default_rng(0)
    image = np.empty((size, size, 3), np.uint8)
    image[:, : size // 2] = (60, 140, 60)
    image[:, size // 2:] = (200, 180, 120)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[:, size // 2:] = 1
    return image, mask


def samples_of(image: np.ndarray, mask: np.ndarray, clicks: int = 8) -> ForestSamples:
    """Features and classes at ``clicks`` random pixels of each class."""
    rng = np.random.default_rng(1)
    features = pixel_features(image)
    rows, cols = [], []
    for c in np.unique(mask):
        r, k = np.nonzero(mask == c)
        pick = rng.choice(r.size, clicks, replace=False)
        rows.append(r[pick])
        cols.append(k[pick])
    r, k = np.concatenate(rows), np.concatenate(cols)
    return ForestSamples(features[r, k], mask[r, k].astype(np.int64), settings=SMALL_FOREST)


def test_samples_round_trip_to_the_same_forest() -> None:
    image, mask = two_field_photo()
    samples = samples_of(image, mask)
    again = ForestSamples.from_bytes(samples.to_bytes())
    np.testing.assert_array_equal(again.x, samples.x)
    np.testing.assert_array_equal(again.y, samples.y)
    assert again.stack == samples.stack and again.settings == samples.settings
    features = pixel_features(image)
    np.testing.assert_array_equal(class_probabilities(samples.fit(), features, 2),
                                  class_probabilities(again.fit(), features, 2))
    with pytest.raises(ValueError, match="not forest samples"):
        ForestSamples.from_bytes(b"not an npz")


def test_image_probabilities_in_blocks_equal_the_whole_image() -> None:
    image, mask = two_field_photo(150)
    forest = samples_of(image, mask).fit()
    whole = class_probabilities(forest, pixel_features(image), 2)
    np.testing.assert_allclose(image_probabilities(forest, image, 2, block=40), whole, atol=1e-6)


def test_fusion_follows_the_forest_where_a_network_is_unsure_and_wrong() -> None:
    image, mask = two_field_photo()
    fusion = ForestFusion(samples_of(image, mask), 2)
    network = np.empty((2, *mask.shape), np.float32)
    network[0], network[1] = 0.6, 0.4            # unsure, and wrong on the right half
    classes = fusion.classes(image, network)
    assert (classes == mask).mean() > 0.95
    assert (network.argmax(0) == mask).mean() == 0.5
    sure = np.stack([np.ones_like(mask, np.float32), np.zeros_like(mask, np.float32)])
    assert (fusion.classes(image, sure) == mask).mean() > 0.95   # the forest has 3/4 of the say
    network_first = ForestFusion(fusion.samples, 2, forest_weight=0.25)
    assert (network_first.classes(image, sure) == 0).all()
    with pytest.raises(ValueError, match="network probabilities"):
        fusion.probabilities(image, network[:, :10])


def colour_shares(image: np.ndarray) -> np.ndarray:
    """(3, H, W): each pixel's red, green and blue shares of its sum, a "network" whose answer
    moves with the image under any flip or turn."""
    rgb = image.transpose(2, 0, 1).astype(np.float32) + 1
    return rgb / rgb.sum(0)


def test_every_view_of_the_network_is_turned_back_onto_the_image() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)   # not square: turns swap h and w
    calls: list[tuple[int, ...]] = []

    def network(view: np.ndarray) -> np.ndarray:
        calls.append(view.shape)
        return colour_shares(view)
    for views in (1, 2, 4, 8):
        seen = list(view_probabilities(image, network, views))
        assert len(seen) == views
        for probs in seen:
            np.testing.assert_allclose(probs, colour_shares(image), atol=1e-6)
    assert (11, 7, 3) in calls and (7, 11, 3) in calls

    def top_rows_first(view: np.ndarray) -> np.ndarray:   # a network that prefers the top
        rows = np.linspace(1, 0, view.shape[0], dtype=np.float32)[:, None]
        first = np.broadcast_to(rows, view.shape[:2])
        return np.stack([first, 1 - first])
    mirrored = list(view_probabilities(image, top_rows_first, 2))
    np.testing.assert_array_equal(mirrored[1], mirrored[0])          # the mirror keeps rows
    both = sum(view_probabilities(image, top_rows_first, 4)) / 4    # both flips even them out
    np.testing.assert_allclose(both[0], 0.5)
    with pytest.raises(ValueError, match="views"):
        next(view_probabilities(image, top_rows_first, 3))


def test_regions_of_several_scales_are_averaged() -> None:
    image, mask = two_field_photo()
    regions = [image_segments(image), np.arange(mask.size).reshape(mask.shape)]
    probs = colour_shares(image)[:2]
    # one pixel per region: the region mean is the pixel itself, half the two-scale mean
    np.testing.assert_allclose(region_blend(probs, regions, 1.0),
                               (segment_mean(probs, regions[0]) + probs) / 2, atol=1e-6)
    fusion = ForestFusion(samples_of(image, mask), 2, scales=(50, 100, 200))
    assert [s.scale for s in fusion.segments] == [50, 100, 200]
    network = probs / probs.sum(0)
    tree = image_probabilities(fusion.forest, image, 2, fusion.samples.stack)
    layers = [image_segments(image, s) for s in fusion.segments]
    w, r = fusion.forest_weight, fusion.region_weight
    expected = (1 - w) * network + w * tree
    expected = (1 - r) * expected + r * sum(segment_mean(expected, s) for s in layers) / 3
    np.testing.assert_allclose(fusion.probabilities(image, network), expected, atol=1e-5)


FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "48",
        "--steps-per-epoch", "1", "--no-progress", "--max-pictures", "0"]


@pytest.fixture(scope="module")
def forest_run(tiny_landcoverai, tmp_path_factory) -> tuple:
    """A one-epoch run with forest labels on the tiny dataset, and what it printed."""
    run = tmp_path_factory.mktemp("forest-run") / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_main(["--data", str(tiny_landcoverai), "--out", str(run), "--epochs", "1",
                           "--points-per-class", "5", "--expand", "forest", "--seed", "0", *FAST])
    assert code == 0
    return run, out.getvalue() + err.getvalue()


def test_a_forest_labels_run_keeps_its_forest_through_export_and_evaluate(
        forest_run, tiny_landcoverai, tmp_path) -> None:
    run, log = forest_run
    metrics = json.loads((run / "metrics.json").read_text())
    fused, network = metrics["final_with_forest"], metrics["epochs"][-1]
    assert "network and forest together" in log
    assert fused["forest_seconds"]["predict"] > 0
    _, _, samples = load_with_forest(run / "last.pt", torch.device("cpu"))
    assert samples is not None and len(samples.y) == metrics["config"]["forest_labels"]["clicks"]

    export_checkpoint(run / "last.pt", tmp_path / "model.pt")
    artifact = load_artifact(tmp_path / "model.pt")
    assert artifact.forest_samples is not None
    assert ForestSamples.from_bytes(artifact.forest_samples).x.shape == samples.x.shape

    scores = {}
    for name, extra in (("fused", []), ("network", ["--no-forest"])):
        out = tmp_path / f"{name}.json"
        assert evaluate_main(["--model", str(tmp_path / "model.pt"), "--data",
                              str(tiny_landcoverai), "--json", str(out), *extra]) == 0
        scores[name] = json.loads(out.read_text())["miou"]
    assert scores["fused"] == pytest.approx(fused["val_miou"], abs=1e-9)
    assert scores["network"] == pytest.approx(network["val_miou"], abs=1e-9)
    assert scores["fused"] != scores["network"]


def test_a_run_without_forest_labels_carries_no_forest(tiny_landcoverai, tmp_path) -> None:
    run = tmp_path / "run"
    assert train_main(["--data", str(tiny_landcoverai), "--out", str(run), "--epochs", "1",
                       "--points-per-class", "5", "--expand", "none", *FAST]) == 0
    assert "final_with_forest" not in json.loads((run / "metrics.json").read_text())
    assert load_with_forest(run / "last.pt", torch.device("cpu"))[2] is None


def test_attach_forest_rebuilds_the_samples_a_run_kept(tiny_landcoverai, tmp_path) -> None:
    from model.artifact import FOREST_SAMPLES
    from model.checkpoint import read_checkpoint, save_checkpoint
    from training.experiments.attach_forest import main as attach_main

    run = tmp_path / "run"
    assert train_main(["--data", str(tiny_landcoverai), "--out", str(run), "--epochs", "1",
                       "--points-per-class", "4", "--expand", "forest", "--seed", "3",
                       *FAST]) == 0
    kept = ForestSamples.from_bytes(read_checkpoint(run / "last.pt")[FOREST_SAMPLES])
    save_checkpoint(run / "last.pt", read_checkpoint(run / "last.pt") | {FOREST_SAMPLES: None})
    assert load_with_forest(run / "last.pt", torch.device("cpu"))[2] is None
    assert attach_main([str(run), "--checkpoints", "last.pt"]) == 0
    again = ForestSamples.from_bytes(read_checkpoint(run / "last.pt")[FOREST_SAMPLES])
    np.testing.assert_array_equal(again.x, kept.x)
    np.testing.assert_array_equal(again.y, kept.y)
    assert again.settings == kept.settings


def test_fusion_grid_scores_the_shipped_mix_as_training_did(forest_run, tmp_path) -> None:
    from training.experiments.fusion_grid import main as grid_main

    run, _ = forest_run
    out = tmp_path / "grid.json"
    scales = "+".join(f"{s:g}" for s in REGION_SCALES)
    assert grid_main([str(run), "--trees", str(FOREST_TREES), "--forest-weights",
                      str(FOREST_WEIGHT), "1", "--scales", scales, "--region-weights",
                      str(REGION_WEIGHT), "--out", str(out)]) == 0
    rows = {(r["forest_weight"], r["scale"], r["region_weight"]): r["miou"]
            for r in json.loads(out.read_text())["rows"]}
    metrics = json.loads((run / "metrics.json").read_text())
    shipped = rows[(FOREST_WEIGHT, scales, REGION_WEIGHT)]
    assert shipped == pytest.approx(metrics["final_with_forest"]["val_miou"], abs=1e-9)
    assert rows[(0.0, None, 0.0)] == pytest.approx(metrics["epochs"][-1]["val_miou"], abs=1e-9)


def test_the_first_trees_of_a_forest_are_the_forest_of_that_many_trees() -> None:
    from training.experiments.fusion_grid import first_trees

    image, mask = two_field_photo()
    samples = samples_of(image, mask)
    features = pixel_features(image)
    fewer = replace(SMALL_FOREST, n_estimators=7)
    np.testing.assert_array_equal(
        class_probabilities(first_trees(samples.fit(), 7), features, 2),
        class_probabilities(ForestSamples(samples.x, samples.y, settings=fewer).fit(), features, 2))


def test_the_map_with_the_forest_is_scored_when_the_run_is_whole(tiny_landcoverai, tmp_path) -> None:
    run = tmp_path / "run"
    common = ["--data", str(tiny_landcoverai), "--out", str(run), "--epochs", "2",
              "--points-per-class", "5", "--expand", "forest", *FAST]
    assert train_main([*common, "--stop-after", "1"]) == 0
    assert "final_with_forest" not in json.loads((run / "metrics.json").read_text())
    assert train_main([*common, "--resume"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and "final_with_forest" in metrics


def test_fusion_cost_benchmark_times_each_setting_on_real_photos(forest_run, tmp_path) -> None:
    from PIL import Image

    from benchmarks.fusion_cost import SETTINGS
    from benchmarks.fusion_cost import main as cost_main

    run, _ = forest_run
    photo = tmp_path / "photo.png"
    Image.fromarray(two_field_photo(96)[0]).save(photo)
    out = tmp_path / "cost.json"
    assert cost_main(["--model", str(run / "last.pt"), "--images", str(photo), "--scale", "0.5",
                      "--repeats", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["megapixels"] == pytest.approx(48 * 48 / 1e6)
    assert [row["setting"] for row in record["rows"]] == list(SETTINGS)
    for row in record["rows"]:
        assert row["cpu_s"]["min"] > 0 and row["trees_wall_s"]["min"] > 0
    assert record["rows"][0]["cpu_over_shipped"]["median"] == 1.0
