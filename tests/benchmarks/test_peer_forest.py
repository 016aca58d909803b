"""The forest peer (benchmarks/peer_forest.py) on small synthetic datasets of the project's own
generator: it trains on exactly the points of a geoseg train run, scores as its validation does,
and writes forest.json."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peer_forest
from training.data.synthetic import write_dataset

FAST = ["--trees", "20", "--jobs", "1", "--sigma-max", "4", "--num-sigma", "3", "--no-progress"]
"""A small forest and feature stack: seconds, not minutes."""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Colour-coded mask folders: 4 train and 2 val scenes of 96x96 pixels."""
    return write_dataset(tmp_path_factory.mktemp("forest"), 4, 2, 0, size=96, seed=11,
                         layout="folders", progress=False)


@pytest.fixture(scope="module")
def geo_layer(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``scenes`` as a point-layer user has them (training.points.simulated): GeoTIFFs under
    train/, val/ and val-masks/, and a GeoPackage of the points --points-per-class 20 --seed 0
    simulates."""
    from training.points.simulated import main as simulated_layer

    geo = tmp_path_factory.mktemp("geo")
    layer = geo / "points.gpkg"
    with warnings.catch_warnings():  # rasterio's own PendingDeprecationWarning on from_origin
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        assert simulated_layer(["--data", str(scenes), "--dataset", "folders", "--points-per-class",
                                "20", "--seed", "0", "--out", str(geo), "--layer", str(layer)]) == 0
    return geo, layer


def run(scenes: Path, out: Path, *extra: str) -> dict:
    assert peer_forest.main(["--data", str(scenes), "--dataset", "folders", "--out", str(out),
                             "--points-per-class", "20", *FAST, *extra]) == 0
    return json.loads((out / peer_forest.RESULT_FILE).read_text())


def test_forest_json_scores_well_above_chance(scenes, tmp_path, capsys):
    result = run(scenes, tmp_path)
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("forest: mIoU ") and "training points" in summary[0]
    assert result["setting"] == "train->val (simulated points)"
    assert result["miou"] > 0.5 and result["pixel_accuracy"] > 0.7  # chance: about 0.2 / 0.2
    assert set(result["iou"]) == set(result["classes"])
    assert result["training_points"] == sum(result["training_points_per_class"].values()) > 0
    assert set(result["seconds"]) == {"features", "fit", "predict", "total"}
    assert result["forest"]["n_estimators"] == 20 and result["features"]["num_sigma"] == 3
    assert {"scikit-learn", "scikit-image"} <= set(result["versions"])
    assert result["argv"][:2] == ["--data", str(scenes)]


def test_the_forest_learns_from_exactly_the_points_of_a_geoseg_run(scenes, tmp_path, monkeypatch):
    """The samples the forest is fitted on are the features and classes at the points that
    geoseg train's dataset (same options, same seed) trains on."""
    from training.data.options import load_table, open_source
    from training.run.inputs import training_dataset
    from training.train import parse_args

    fitted: list[tuple[np.ndarray, np.ndarray]] = []
    fit = peer_forest.fit_forest
    monkeypatch.setattr(peer_forest, "fit_forest", lambda x, y, *a: fitted.append((x, y)) or fit(x, y, *a))
    run(scenes, tmp_path, "--seed", "3")
    args = parse_args(["--data", str(scenes), "--dataset", "folders", "--out", str(tmp_path / "run"),
                       "--points-per-class", "20", "--seed", "3", "--plain"])
    source = open_source(args, "train", load_table(args))
    dataset = training_dataset(args, source, load_table(args))
    stack = peer_forest.FeatureStack(sigma_max=4, num_sigma=3)
    want_x, want_y = [], []
    for index in range(len(source)):
        sample = source.load(index)
        points = dataset.points(index, sample.mask)
        want_x.append(peer_forest.pixel_features(sample.image, stack)[points[:, 0], points[:, 1]])
        want_y.append(points[:, 2])
    (x, y), = fitted
    np.testing.assert_array_equal(y, np.concatenate(want_y))
    np.testing.assert_array_equal(x, np.concatenate(want_x))


def test_wrong_labels_score_far_lower(scenes, tmp_path, monkeypatch):
    """The score comes from the clicked classes: the same points with their classes shuffled
    give a far lower mIoU."""
    right = run(scenes, tmp_path / "right")["miou"]
    features_at = peer_forest.features_at

    def shuffled(features: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = features_at(features, points)
        return x, np.random.default_rng(0).permutation(y)
    monkeypatch.setattr(peer_forest, "features_at", shuffled)
    wrong = run(scenes, tmp_path / "wrong")["miou"]
    assert wrong < right - 0.25, (right, wrong)


def test_same_scene_trains_on_the_validation_images(scenes, tmp_path):
    result = run(scenes, tmp_path, "--same-scene")
    assert result["setting"] == "same-scene (simulated points)"
    assert result["train_images"] == result["val_images"] == 2
    assert result["miou"] > 0.5


def test_a_point_layer_gives_what_the_same_simulated_points_give(scenes, geo_layer, tmp_path):
    """training.points.simulated rewrites the dataset as GeoTIFFs and a GeoPackage of the same
    points: the point-layer path fits the same forest and scores the same dense masks."""
    geo, layer = geo_layer
    simulated = run(scenes, tmp_path / "simulated")
    assert peer_forest.main(["--images", str(geo / "train"), "--points", str(layer),
                             "--class-field", "landcover", "--val-images", str(geo / "val"),
                             "--val-masks", *map(str, sorted((geo / "val-masks").iterdir())),
                             "--out", str(tmp_path / "layer"), *FAST]) == 0
    from_layer = json.loads((tmp_path / "layer" / peer_forest.RESULT_FILE).read_text())
    assert from_layer["setting"] == "train->val (point layer)"
    assert from_layer["training_points"] == simulated["training_points"]
    assert from_layer["confusion"] == simulated["confusion"]
    assert from_layer["point_scores"]["points"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--data", "no/such/folder", "--out", "x"], "dataset folder no/such/folder does not exist"),
    (["--out", "x"], "give --data"),
    (["--data", ".", "--out", "x", "--sigma-min", "5", "--sigma-max", "2"], "--sigma-min 5.0 is above"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    try:
        code = peer_forest.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_geoseg_peer_forest_help(capsys):
    from tools.cli import main as geoseg

    with pytest.raises(SystemExit) as exit_:
        geoseg(["peer-forest", "--help"])
    assert exit_.value.code == 0 and "--same-scene" in capsys.readouterr().out


def test_large_rasters_give_their_points_features_from_cells_with_context(geo_layer, tmp_path,
                                                                         monkeypatch):
    """Rasters above training.points.evaluation's whole-raster size are read in the windows of
    geoseg predict's plan, with context: the same points, and nearly the same forest and
    scores."""
    import training.points.evaluation

    geo, layer = geo_layer
    options = ["--images", str(geo / "train"), "--points", str(layer), "--class-field", "landcover",
               "--val-images", str(geo / "val"), "--val-masks",
               *map(str, sorted((geo / "val-masks").iterdir())), *FAST]
    assert peer_forest.main([*options, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(training.points.evaluation, "WHOLE_RASTER_PIXELS", 32 * 32)
    assert peer_forest.main([*options, "--out", str(tmp_path / "cells")]) == 0
    whole, cells = (json.loads((tmp_path / run / peer_forest.RESULT_FILE).read_text())
                    for run in ("whole", "cells"))
    assert cells["training_points_per_class"] == whole["training_points_per_class"]
    assert abs(cells["miou"] - whole["miou"]) < 0.03, (whole["miou"], cells["miou"])
