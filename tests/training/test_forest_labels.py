"""Forest labels (``geoseg train --expand forest``): a forest fitted on the clicks labels the
pixels it is sure of, and the training targets carry those labels."""
from __future__ import annotations

import numpy as np
import pytest
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


def synthetic_pairs(count: int, size: int, clicks: int
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Synthetic scenes (seeds 0..count-1) with ``clicks`` clicks per class present: the
    (image, sparse label) pairs and the dense masks."""
    pairs, masks = [], []
    for seed in range(count):
        image, mask = generate_scene(size, seed)
        rng = np.random.default_rng(seed)
        sparse = np.full(mask.shape, U, np.uint8)
        for c in np.unique(mask):
            rows, cols = np.nonzero(mask == c)
            pick = rng.choice(rows.size, size=min(clicks, rows.size), replace=False)
            sparse[rows[pick], cols[pick]] = c
        pairs.append((image, sparse))
        masks.append(mask)
    return pairs, masks


def test_forest_labels_most_of_a_synthetic_scene_rightly() -> None:
    pairs, masks = synthetic_pairs(3, 128, 10)
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


def test_refresh_relabels_from_the_mean_of_forest_and_network() -> None:
    pairs, _ = synthetic_pairs(2, 96, 5)
    expander = ForestExpander(pairs, 5, threshold=0.6, settings=SMALL_FOREST, refreshable=True)
    forest = [expander._probs[i].astype(np.float32) for i in range(len(pairs))]
    before = [expander.expansion(i).labels.copy() for i in range(len(pairs))]

    sure = int(np.argmax(sum(f.sum(axis=(1, 2)) for f in forest)))  # a class the scenes hold

    def network(image: np.ndarray) -> np.ndarray:  # sure of that class everywhere
        probs = np.zeros((5, *image.shape[:2]), np.float32)
        probs[sure] = 1.0
        return probs

    share = expander.refresh(network)
    labelled = total = 0
    for index, (_, sparse) in enumerate(pairs):
        mean = (forest[index] + network(pairs[index][0])) / 2
        expected = confident_labels(mean, sparse, 0.6)
        e = expander.expansion(index)
        np.testing.assert_array_equal(e.labels, expected.labels)
        clicked = sparse != U
        np.testing.assert_array_equal(e.labels[clicked], sparse[clicked])  # clicks stay
        assert set(np.unique(e.labels[e.expanded])) <= {sure}  # the mean is sure of it alone
        labelled += int(e.expanded.sum())
        total += sparse.size
    assert labelled > 0 and abs(share - labelled / total) < 1e-9
    assert any((before[i] != expander.expansion(i).labels).any() for i in range(len(pairs)))


def test_forest_refresh_runs_before_the_epochs_it_names(tiny_landcoverai, tmp_path) -> None:
    from training.run.loop import refresh_forest_labels

    args = parse_args(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "run"),
                       "--points-per-class", "3", "--expand", "forest", "--crop-size", "48",
                       "--forest-refresh", "2", "--arch", "deeplabv3_mobilenet_v3_large",
                       "--no-progress"])
    source = LandCoverAITiles(tiny_landcoverai, "train")
    dataset = training_dataset(args, source, load_table(args))
    calls: list[int] = []
    dataset.expander.refresh = lambda probabilities: calls.append(len(calls)) or 0.5

    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": torch.zeros(x.shape[0], 5, *x.shape[2:])}

    for epoch in range(4):  # 0-based: epochs 2, 3 and 4 (1-based) refresh
        refresh_forest_labels(args, dataset, Constant(), torch.device("cpu"), epoch)
    assert calls == [0, 1, 2]


def test_forest_table_times_a_run_to_the_forests_level(tmp_path):
    """Seconds to the forest's mIoU: the forest labels' seconds plus the epochs up to the first
    one that reaches it; never (inf) when no epoch does."""
    import json

    from training.experiments.forest_table import run_row

    run = tmp_path / "run"
    run.mkdir()
    epochs = [{"val_miou": v, "seconds": 10.0} for v in (0.30, 0.45, 0.40, 0.50)]
    config = {"forest_labels": {"seconds": {"features": 3.0, "fit": 2.0}}}
    (run / "metrics.json").write_text(json.dumps({"config": config, "epochs": epochs}))
    row = run_row(run, level=44.0)
    assert row["reach"] == 25.0 and row["seconds"] == 45.0
    assert row["final"] == 50.0 and row["best"] == 50.0
    assert run_row(run, level=60.0)["reach"] == float("inf")
    assert "shipped" not in row
    (run / "metrics.json").write_text(json.dumps({"config": config, "epochs": epochs,
                                                  "final_with_forest": {"val_miou": 0.6}}))
    assert run_row(run)["shipped"] == pytest.approx(60.0)  # the run's own map
    (run / "shipped.json").write_text(json.dumps({"miou": 0.55}))
    assert run_row(run)["shipped"] == pytest.approx(55.0)  # geoseg evaluate --json, later: first
