"""Click suggestions: uncertain and disputed pixels first, spread over classes and space; and the
simulation that measures them runs on a small synthetic case."""
from __future__ import annotations

import numpy as np

from training.experiments.click_suggestions import GridImage, curve
from training.points.suggest import SuggestionSettings, margin_uncertainty, suggest_clicks

H, W = 80, 120


def confident_map(uncertain_cols: slice) -> np.ndarray:
    """(2, H, W): class 0 on the left half, 1 on the right, both sure (0.95), except a 50/50 band
    of columns ``uncertain_cols``."""
    probs = np.zeros((2, H, W), np.float32)
    probs[0, :, : W // 2], probs[1, :, : W // 2] = 0.95, 0.05
    probs[0, :, W // 2:], probs[1, :, W // 2:] = 0.05, 0.95
    probs[:, :, uncertain_cols] = 0.5
    return probs


def no_clicks() -> np.ndarray:
    return np.zeros((0, 3), np.int64)


def test_margin_uncertainty_is_one_where_classes_tie_and_low_where_sure():
    probs = confident_map(slice(10, 12))
    u = margin_uncertainty(probs)
    assert np.allclose(u[:, 10:12], 1.0) and np.allclose(u[:, 30], 0.1)


def test_suggestions_go_to_the_most_uncertain_pixels_of_each_class_spread_apart():
    probs = confident_map(slice(0, 0))
    probs[0, :, 20:30], probs[1, :, 20:30] = 0.55, 0.45  # doubtful strips inside each half
    probs[0, :, 90:100], probs[1, :, 90:100] = 0.4, 0.6
    settings = SuggestionSettings(min_distance=10, candidates=H * W)
    picks = suggest_clicks(probs, None, no_clicks(), 6, np.random.default_rng(0), None, settings)
    assert len(picks) == 6
    in_strips = ((picks[:, 1] >= 20) & (picks[:, 1] < 30)) | ((picks[:, 1] >= 90) & (picks[:, 1] < 100))
    assert in_strips.all()
    gaps = np.hypot(*(picks[:, None, :2] - picks[None, :, :2]).transpose(2, 0, 1))
    assert gaps[~np.eye(6, dtype=bool)].min() >= 10


def test_disagreement_outranks_a_confident_agreeing_map_and_existing_clicks_are_kept_clear():
    probs = confident_map(slice(0, 0))
    other = probs.copy()
    for cols in (slice(10, 40), slice(80, 110)):  # the second opinion disputes a block per half
        other[:, 20:40, cols] = other[::-1, 20:40, cols]
    clicks = np.array([[30, 95, 1]])
    settings = SuggestionSettings(min_distance=8, candidates=H * W)
    picks = suggest_clicks(probs, other, clicks, 4, np.random.default_rng(1), None, settings)
    in_rows = (picks[:, 0] >= 20) & (picks[:, 0] < 40)
    in_cols = ((picks[:, 1] >= 10) & (picks[:, 1] < 40)) | ((picks[:, 1] >= 80) & (picks[:, 1] < 110))
    assert (in_rows & in_cols).all()
    assert (np.hypot(picks[:, 0] - 30, picks[:, 1] - 95) >= 8).all()


def test_every_mapped_class_is_questioned_in_turn_and_nodata_never():
    probs = confident_map(slice(0, 0))
    probs[:, :, 10:20] = 0.5                  # uncertain inside class 0's half...
    probs[0, :, 100:102], probs[1, :, 100:102] = 0.3, 0.7  # ...and less so inside class 1's
    valid = np.ones((H, W), bool)
    valid[:, 10:15] = False
    settings = SuggestionSettings(min_distance=6, candidates=H * W)
    picks = suggest_clicks(probs, None, no_clicks(), 4, np.random.default_rng(2), valid, settings)
    assert sorted(picks[:, 2].tolist()) == [0, 0, 1, 1]
    assert valid[picks[:, 0], picks[:, 1]].all()


def test_a_crowded_image_still_gets_its_suggestions():
    probs = confident_map(slice(0, W))
    settings = SuggestionSettings(min_distance=500, candidates=H * W)
    picks = suggest_clicks(probs, None, no_clicks(), 5, np.random.default_rng(3), None, settings)
    assert len(picks) == 5 and len({tuple(p) for p in picks[:, :2].tolist()}) == 5


def test_the_simulation_adds_one_click_per_class_and_photo_per_round():
    rng = np.random.default_rng(0)
    images = []
    for k in range(2):
        mask = np.zeros((40, 50), np.uint8)
        mask[:, 25:] = 1
        mask[:5, :5] = 255
        features = rng.normal(0, 0.3, (40, 50, 4)).astype(np.float32)
        features[..., 0] += mask == 1  # one feature tells the classes apart
        images.append(GridImage(f"im{k}", features, mask))
    for strategy in ("random", "uniform", "suggested", "corrections"):
        rows = curve(strategy, images, [2, 3, 5], 2, 0, SuggestionSettings(min_distance=4))
        assert [r["clicks"] for r in rows] == [8, 12, 20]
        assert rows[-1]["miou"] > 75


def test_suggestions_around_one_doubtful_spot_are_spread_not_piled_up():
    rows, cols = np.mgrid[0:H, 0:W]
    doubt = np.exp(-np.hypot(rows - 40, cols - 30) / 15)  # most doubtful at (40, 30)
    probs = np.stack([0.5 + 0.45 * (1 - doubt), 0.5 - 0.45 * (1 - doubt)]).astype(np.float32)
    settings = SuggestionSettings(min_distance=10, candidates=H * W)
    picks = suggest_clicks(probs, None, no_clicks(), 4, np.random.default_rng(4), None, settings)
    gaps = np.hypot(*(picks[:, None, :2] - picks[None, :, :2]).transpose(2, 0, 1))
    assert gaps[~np.eye(4, dtype=bool)].min() >= 10
    assert np.hypot(picks[0, 0] - 40, picks[0, 1] - 30) <= 1.5  # the first is the most doubtful


def test_the_simulation_scores_the_map_averaged_within_regions_too():
    rng = np.random.default_rng(1)
    images = []
    for k in range(2):
        mask = np.zeros((40, 50), np.uint8)
        mask[:, 25:] = 1
        features = rng.normal(0, 1.0, (40, 50, 4)).astype(np.float32)
        features[..., 0] += mask == 1  # a weak feature: the per-pixel map is speckled
        regions = (np.arange(50)[None, :] // 25 + 2 * (np.arange(40)[:, None] // 20)).astype(np.int64)
        images.append(GridImage(f"im{k}", features, mask, np.broadcast_to(regions, (40, 50)).copy()))
    (row,) = curve("random", images, [5], 2, 0, SuggestionSettings(min_distance=4))
    assert row["miou"] < 90 and row["miou_regions"]["1.0"] > row["miou"] + 5


def test_corrections_can_look_at_the_map_the_page_shows():
    """With a region weight the simulated user corrects the blended map: a speck the forest has
    wrong inside a region that the region mean gets right is no longer an error to click."""
    from types import SimpleNamespace

    from training.experiments.click_suggestions import next_round

    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = 1
    regions = (np.arange(40)[None, :] // 20).repeat(20, 0).astype(np.int64)
    probs = np.stack([mask == 0, mask == 1]).astype(np.float32)
    probs[:, 5:8, 5:8] = probs[::-1, 5:8, 5:8]  # a 3 x 3 speck of the wrong class on the left
    image = GridImage("im", np.zeros((20, 40, 1), np.float32), mask, regions)
    learner = SimpleNamespace(probs=[probs], second=[None])
    have = np.array([[10, 2, 0], [10, 38, 1]], np.int64)
    settings = SuggestionSettings(min_distance=1)
    for weight, speck_clicked in ((0.0, True), (1.0, False)):
        (after,) = next_round("corrections", [image], [have], learner, np.random.default_rng(0),
                              settings, weight)
        new = after[len(have):]
        in_speck = ((new[:, 0] >= 5) & (new[:, 0] < 8) & (new[:, 1] >= 5) & (new[:, 1] < 8))
        assert in_speck.any() == speck_clicked, weight
