import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from model.class_table import IGNORE_INDEX
from training.data.sources import LandCoverAITiles, PointSupervisedDataset
from training.labels.expansion import (
    EXPANDED_OFFSET,
    PADDING,
    ExpandedPointDataset,
    ExpansionConfig,
    SuperpixelCache,
    expand_labels,
    expand_points,
    superpixels,
    unpack_target,
)

U = IGNORE_INDEX


def blocks_image(size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of 4 flat colour quadrants (+ mild noise) and its class map (quadrant id)."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    half = size // 2
    classes[:half, half:], classes[half:, :half], classes[half:, half:] = 1, 2, 3
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [220, 220, 60]])
    image = colours[classes] + rng.integers(-6, 7, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), classes


def test_segments_with_agreeing_points_are_filled_conflicting_ones_stay_unlabelled():
    segments = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 4, 0), 4, 1)  # 4 blocks of 4x4
    sparse = np.full((8, 8), U, np.uint8)
    sparse[0, 0], sparse[3, 3] = 1, 1          # block 0: two points agree -> all 1
    sparse[0, 4], sparse[2, 6] = 2, 3          # block 1: they disagree -> only the points
    sparse[5, 5] = 4                           # block 3: one point -> all 4; block 2: none
    e = expand_labels(sparse, segments)
    assert np.all(e.labels[:4, :4] == 1)
    block1 = e.labels[:4, 4:].copy()
    assert block1[0, 0] == 2 and block1[2, 2] == 3
    block1[0, 0] = block1[2, 2] = U
    assert np.all(block1 == U)
    assert np.all(e.labels[4:, :4] == U)
    assert np.all(e.labels[4:, 4:] == 4)
    assert (e.segments, e.labelled_segments, e.conflicting_segments) == (4, 2, 1)
    assert not e.expanded[sparse != U].any()
    assert e.expanded.sum() == 16 - 2 + 16 - 1


@pytest.mark.parametrize("seed", range(6))
def test_random_points_never_change_and_disagreeing_segments_never_expand(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    segments = superpixels(image, ExpansionConfig(segment_area_px=30))
    sparse = np.full((40, 50), U, np.uint8)
    idx = rng.choice(sparse.size, size=120, replace=False)
    sparse.flat[idx] = rng.integers(0, 3, size=idx.size)
    e = expand_labels(sparse, segments)
    clicked = sparse != U
    np.testing.assert_array_equal(e.labels[clicked], sparse[clicked])
    conflicting = 0
    for s in np.unique(segments):
        inside = segments == s
        classes = set(sparse[inside & clicked].tolist())
        if len(classes) == 1:
            assert np.all(e.labels[inside] == classes.pop())
        else:  # none or several: nothing but the clicked points themselves
            assert np.all(e.labels[inside & ~clicked] == U)
            conflicting += len(classes) > 1
    assert conflicting > 0  # the case under test occurred
    assert e.conflicting_segments == conflicting


def test_slic_follows_colour_regions_so_one_point_per_region_labels_it_correctly():
    image, classes = blocks_image()
    sparse = np.full(classes.shape, U, np.uint8)
    for y, x in ((10, 10), (10, 80), (80, 10), (80, 80)):
        sparse[y, x] = classes[y, x]
    e = expand_points(image, sparse, ExpansionConfig(segment_area_px=64))
    labelled = e.labels != U
    assert e.expanded.sum() >= 4 * 30
    np.testing.assert_array_equal(e.labels[labelled], classes[labelled])


def test_weights_and_packed_target():
    sparse = np.array([[1, U, U], [U, U, 0]], np.uint8)
    segments = np.array([[0, 0, 1], [2, 2, 2]])
    e = expand_labels(sparse, segments)
    np.testing.assert_array_equal(e.labels, [[1, 1, U], [0, 0, 0]])
    np.testing.assert_array_equal(e.weights(0.3), np.array([[1, 0.3, 0], [0.3, 0.3, 1]],
                                                           np.float32))
    packed = e.packed()
    np.testing.assert_array_equal(packed, [[1, EXPANDED_OFFSET + 1, U],
                                           [EXPANDED_OFFSET, EXPANDED_OFFSET, 0]])
    clicked, expanded, valid = unpack_target(torch.from_numpy(packed)[None])
    np.testing.assert_array_equal(clicked[0].numpy(), [[1, U, U], [U, U, 0]])
    np.testing.assert_array_equal(expanded[0].numpy(), [[U, 1, U], [0, 0, U]])
    assert valid.shape == (1, 1, 2, 3) and bool(valid.all())
    assert not unpack_target(torch.tensor([[[PADDING, 3]]])).valid[0, 0, 0, 0]


def test_no_points_gives_no_labels():
    e = expand_labels(np.full((5, 5), U, np.uint8), np.zeros((5, 5), np.int32))
    assert np.all(e.labels == U) and not e.expanded.any()


def test_segment_count_rule():
    assert ExpansionConfig().n_segments((512, 512)) == 4096
    cfg = ExpansionConfig(gsd_m=0.25, segment_area_m2=4.0)
    assert cfg.area_px() == pytest.approx(64.0)
    assert ExpansionConfig(gsd_m=0.5, segment_area_m2=4.0).n_segments((100, 100)) == 625
    assert ExpansionConfig(segment_area_px=1e9).n_segments((10, 10)) == 1
    with pytest.raises(ValueError):
        ExpansionConfig(segment_area_px=0.5)


def test_superpixels_are_deterministic_and_change_with_parameters():
    image, _ = blocks_image(64, seed=1)
    a = superpixels(image, ExpansionConfig(segment_area_px=40))
    b = superpixels(image.copy(), ExpansionConfig(segment_area_px=40))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int32 and a.min() == 0
    assert not np.array_equal(a, superpixels(image, ExpansionConfig(segment_area_px=200)))


def test_cache_returns_identical_arrays_and_computes_once(tmp_path):
    image, classes = blocks_image(64, seed=2)
    cfg = ExpansionConfig(segment_area_px=50)
    fresh = superpixels(image, cfg)
    cache = SuperpixelCache(tmp_path / "sp")
    first = cache.segments(image, cfg)
    second = cache.segments(image, cfg)
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(second, fresh)
    assert second.dtype == fresh.dtype
    assert (cache.stats.computed, cache.stats.hits) == (1, 1)
    assert cache.stats.seconds > 0 and cache.stats.seconds_per_image() == cache.stats.seconds
    files = list((tmp_path / "sp").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "sp").glob("*.tmp"))
    # another process (a new cache on the same folder) reads the file instead of computing
    other = SuperpixelCache(tmp_path / "sp")
    np.testing.assert_array_equal(other.segments(image, cfg), fresh)
    assert (other.stats.computed, other.stats.hits) == (0, 1)
    # a damaged file is recomputed; other parameters or pixels are other entries
    files[0].write_bytes(b"not an npz")
    np.testing.assert_array_equal(SuperpixelCache(tmp_path / "sp").segments(image, cfg), fresh)
    other.segments(image, ExpansionConfig(segment_area_px=80))
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    other.segments(changed, cfg)
    assert other.stats.computed == 2 and len(list((tmp_path / "sp").glob("*.npz"))) == 3
    # the memory cache behaves the same
    memory = SuperpixelCache()
    np.testing.assert_array_equal(memory.segments(image, cfg), fresh)
    memory.segments(image, cfg)[:] = -1  # callers get copies
    np.testing.assert_array_equal(memory.segments(image, cfg), fresh)
    assert (memory.stats.computed, memory.stats.hits) == (1, 2)
    sparse = np.full(classes.shape, U, np.uint8)
    sparse[5, 5] = 0
    a = expand_points(image, sparse, cfg, cache)
    b = expand_points(image, sparse, cfg)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.expanded, b.expanded)


def test_dataset_targets_match_the_plain_dataset_crop_for_crop(tiny_landcoverai):
    source = LandCoverAITiles(tiny_landcoverai, "train")
    plain = PointSupervisedDataset(source, 3, seed=4, crop=48)
    packed_only = ExpandedPointDataset(source, 3, seed=4, crop=48, expansion=None)
    expanded = ExpandedPointDataset(source, 3, seed=4, crop=48,
                                    expansion=ExpansionConfig(segment_area_px=40))
    for draw in (0, 5, 9):
        image, label = plain[draw]
        image2, target2 = packed_only[draw]
        image3, target3 = expanded[draw]
        assert torch.equal(image, image2) and torch.equal(image, image3)
        assert torch.equal(label, target2)
        clicked, exp, valid = unpack_target(target3[None])
        assert torch.equal(clicked[0], label)
        assert bool(valid.all())
    assert expanded.cache.stats.computed == 3  # images 0, 5 and 9 % 6 = 3, once each
    assert (unpack_target(expanded[6][1][None]).expanded != U).any()  # image 0 again
    assert expanded.cache.stats.computed == 3
    batch = default_collate([expanded[0], expanded[1]])
    assert batch[1].shape == (2, 48, 48)


def test_dataset_marks_crop_padding_and_is_deterministic(tiny_landcoverai):
    source = LandCoverAITiles(tiny_landcoverai, "train")
    plain = PointSupervisedDataset(source, 3, seed=1, crop=80)
    ds = ExpandedPointDataset(source, 3, seed=1, crop=80,
                              expansion=ExpansionConfig(segment_area_px=40))
    image, target = ds[2]
    _, label = plain[2]
    valid = unpack_target(target[None]).valid[0, 0]
    assert int((~valid).sum()) == 80 * 80 - 64 * 64
    assert bool((image[:, ~valid] == 0).all())
    assert torch.equal(label == U, (target == U) | (target == PADDING)
                       | ((target >= EXPANDED_OFFSET) & (target < PADDING)))
    again = ExpandedPointDataset(source, 3, seed=1, crop=80,
                                 expansion=ExpansionConfig(segment_area_px=40))
    assert torch.equal(again[2][1], target) and torch.equal(again[2][0], image)
    with pytest.raises(ValueError, match="point labels"):
        ExpandedPointDataset(source, None)
