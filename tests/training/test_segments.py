"""Forest probabilities averaged within image regions (``geoseg train --forest-segments``)."""
from __future__ import annotations

import numpy as np
import pytest

from training.data.options import load_table
from training.data.sources import LandCoverAITiles
from training.labels.forest import ForestExpander, class_probabilities, confident_labels, pixel_features
from training.labels.segments import SegmentSettings, image_segments, segment_mean
from training.run.inputs import training_dataset
from training.train import parse_args

from .test_forest_labels import SMALL_FOREST, synthetic_pairs


def test_segment_mean_gives_each_region_its_mean() -> None:
    segments = np.array([[0, 0, 1], [0, 2, 1]])
    probs = np.zeros((2, 2, 3), np.float32)
    probs[0] = [[0.9, 0.3, 0.2], [0.6, 0.7, 0.4]]
    probs[1] = 1 - probs[0]
    out = segment_mean(probs, segments)
    np.testing.assert_allclose(out[0], [[0.6, 0.6, 0.3], [0.6, 0.7, 0.3]], atol=1e-6)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        segment_mean(probs, segments[:, :2])


def test_regions_follow_the_colour_edges_of_a_photo() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :40] = (200, 180, 150)  # sand
    image[:, 40:] = (40, 90, 50)  # trees
    noisy = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    regions = image_segments(noisy, SegmentSettings(scale=100, min_size=20))
    left, right = set(np.unique(regions[:, :40])), set(np.unique(regions[:, 40:]))
    assert not left & right  # no region crosses the edge
    assert len(left) + len(right) < 64  # regions, not pixels


def test_forest_labels_come_from_the_region_means_with_segments() -> None:
    pairs, _ = synthetic_pairs(2, 96, 5)
    settings = SegmentSettings(scale=100, min_size=20)
    expander = ForestExpander(pairs, 5, threshold=0.6, settings=SMALL_FOREST, segments=settings)
    plain = ForestExpander(pairs, 5, threshold=0.6, settings=SMALL_FOREST)
    differs = False
    for index, (image, sparse) in enumerate(pairs):
        probs = class_probabilities(expander.forest, pixel_features(image), 5)
        expected = confident_labels(segment_mean(probs, image_segments(image, settings)), sparse, 0.6)
        np.testing.assert_array_equal(expander.expansion(index).labels, expected.labels)
        regions = image_segments(image, settings)
        labels = expander.expansion(index).labels
        unclicked = sparse == 255
        for region in np.unique(regions):  # one answer per region, clicks aside
            assert len(set(np.unique(labels[(regions == region) & unclicked]))) <= 1
        differs |= bool((plain.expansion(index).labels != labels).any())
    assert differs


def test_train_option_forest_segments_reaches_the_expander(tiny_landcoverai, tmp_path) -> None:
    args = parse_args(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "run"),
                       "--points-per-class", "3", "--expand", "forest", "--forest-segments", "50",
                       "--crop-size", "48", "--no-progress"])
    dataset = training_dataset(args, LandCoverAITiles(tiny_landcoverai, "train"), load_table(args))
    assert dataset.expander is not None and dataset.expander.segments == SegmentSettings(scale=50.0)
    default = parse_args(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "run2")])
    assert default.forest_segments == 0.0


def test_region_blend_moves_each_pixel_towards_its_regions_mean_by_the_weight():
    from training.labels.segments import region_blend

    segments = np.array([[0, 0, 1, 1]])
    probs = np.array([[[0.9, 0.3, 0.2, 0.2]], [[0.1, 0.7, 0.8, 0.8]]], np.float32)  # (2, 1, 4)
    np.testing.assert_allclose(region_blend(probs, segments, 0.0), probs)
    means = region_blend(probs, segments, 1.0)
    np.testing.assert_allclose(means[0, 0], [0.6, 0.6, 0.2, 0.2], atol=1e-6)
    half = region_blend(probs, segments, 0.5)
    np.testing.assert_allclose(half[0, 0], [0.75, 0.45, 0.2, 0.2], atol=1e-6)
    assert half.dtype == np.float32
    # the unsure pixel (0.3 vs 0.7) keeps its own class at 0.5, follows its region at 1
    assert half.argmax(0)[0, 1] == 1 and means.argmax(0)[0, 1] == 0


def test_segment_scale_scores_each_region_weight(tiny_folders, tmp_path):
    import json

    from training.experiments.segment_scale import main

    out = tmp_path / "scale.json"
    assert main(["--data", str(tiny_folders), "--classes", str(tiny_folders / "classes.json"),
                 "--train-dirs", "train", "--val-dirs", "val", "--scale", "1",
                 "--points-per-class", "5", "--scales", "100", "--min-sizes", "20",
                 "--weights", "0.5", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    for setting in ("across", "same_scene"):
        assert set(result[setting]) == {"plain", "100-20", "100-20-w0.5"}
        assert all(0 <= v <= 100 for v in result[setting].values())
