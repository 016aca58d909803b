"""Forest labels (``geoseg train --expand forest``): a forest fitted on the clicks labels the
pixels it is sure of, and the training targets carry those labels."""
from __future__ import annotations

import numpy as np
import torch

from model.class_table import IGNORE_INDEX as U
from training.data.options import load_table
from training.data.sources import LandCoverAITiles
from training.data.synthetic import generate_scene
from training.labels.expansion import ExpandedPointDataset, unpack_target
from training.labels.forest import ForestExpander, ForestSettings, confident_labels
from training.run.inputs import training_dataset
from training.train import parse_args

SMALL_FOREST = ForestSettings(n_estimators=30, n_jobs=1, random_state=0)


def test_confident_labels_keep_clicks_and_respect_the_threshold() -> None:
    probs = np.zeros((3, 2, 3), np.float32)
    probs[0] = [[0.9, 0.4, 0.2], [0.1, 0.5, 0.3]]
    probs[1] = [[0.1, 0.3, 0.7], [0.8, 0.5, 0.3]]
    probs[2] = 1.0 - probs[0] - probs[1]
    sparse = np.full((2, 3), U, np.uint8)
    sparse[0, 0] = 2  # a click the forest disagrees with keeps its own class
    e = confident_labels(probs, sparse, threshold=0.6)
    np.testing.assert_array_equal(e.labels, [[2, U, 1], [1, U, U]])
    np.testing.assert_array_equal(e.expanded, [[False, False, True], [True, False, False]])
    assert e.clicked[0, 0] and e.clicked.sum() == 1


def test_forest_labels_most_of_a_synthetic_scene_rightly() -> None:
    pairs, masks = [], []
    for seed in range(3):
        image, mask = generate_scene(128, seed)
        rng = np.random.default_rng(seed)
        sparse = np.full(mask.shape, U, np.uint8)
        for c in np.unique(mask):
            rows, cols = np.nonzero(mask == c)
            pick = rng.choice(rows.size, size=min(10, rows.size), replace=False)
            sparse[rows[pick], cols[pick]] = c
        pairs.append((image, sparse))
        masks.append(mask)
    expander = ForestExpander(pairs, 5, threshold=0.6, settings=SMALL_FOREST)
    labelled = right = total = 0
    for index, mask in enumerate(masks):
        e = expander.expansion(index)
        clicked = pairs[index][1] != U
        np.testing.assert_array_equal(e.labels[clicked], pairs[index][1][clicked])
        labelled += int(e.expanded.sum())
        right += int((e.labels[e.expanded] == mask[e.expanded]).sum())
        total += mask.size
    assert labelled / total > 0.5, labelled / total
    assert right / labelled > 0.9, right / labelled
    stats = expander.stats()
    assert stats.images == 3 and stats.clicks == int(sum((p[1] != U).sum() for p in pairs))
    assert abs(stats.labelled_share - labelled / total) < 1e-9


def test_train_with_expand_forest_feeds_forest_labels_to_the_loss(tiny_landcoverai, tmp_path) -> None:
    args = parse_args(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "run"),
                       "--points-per-class", "3", "--expand", "forest", "--crop-size", "48",
                       "--no-progress"])
    source = LandCoverAITiles(tiny_landcoverai, "train")
    dataset = training_dataset(args, source, load_table(args))
    assert isinstance(dataset, ExpandedPointDataset) and dataset.expander is not None
    sample = source.load(0)
    expected = dataset.expander.expansion(0)
    packed = dataset.training_label(0, sample)
    clicked, expanded, _ = unpack_target(torch.from_numpy(packed)[None])
    assert int((expanded != U).sum()) == int(expected.expanded.sum()) > 0
    np.testing.assert_array_equal(clicked[0].numpy() != U, dataset.label(0, sample.mask) != U)
