import numpy as np
import pytest
import torch
from PIL import Image

from model.class_table import IGNORE_INDEX, ClassTable, ClassTableError
from training.data.sources import (
    ColourMaskFolders,
    DatasetError,
    LandCoverAITiles,
    PointSupervisedDataset,
    augment,
    epoch_draws,
    random_crop,
)
from training.data.synthetic import generate_scene


def test_augment_keeps_image_and_label_aligned():
    # The label is a function of the image's pixels: any misalignment breaks the relation.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
    label = (image[..., 0] % 5).astype(np.uint8)
    seen_shapes = set()
    for seed in range(32):
        img2, lab2 = augment(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(lab2, img2[..., 0] % 5)
        seen_shapes.add(lab2.shape)
        assert sorted(img2.reshape(-1, 3).tolist()) == sorted(image.reshape(-1, 3).tolist())
    assert seen_shapes == {(12, 17), (17, 12)}  # rotations by 90 degrees happened


def test_random_crop_pads_small_images_with_ignore():
    image = np.ones((5, 6, 3), np.uint8)
    label = np.zeros((5, 6), np.uint8)
    img, lab = random_crop(image, label, 8, np.random.default_rng(0))
    assert img.shape == (8, 8, 3) and lab.shape == (8, 8)
    assert (lab == IGNORE_INDEX).sum() == 64 - 30
    assert img[lab == IGNORE_INDEX].max() == 0


def test_point_dataset_items_and_fixed_annotation(tiny_landcoverai):
    source = LandCoverAITiles(tiny_landcoverai, "train")
    ds = PointSupervisedDataset(source, points_per_class=3, seed=1, crop=None, augment=False)
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert 0.0 <= image.min() and image.max() <= 1.0
    mask = source.load(0).mask
    present = len(np.unique(mask))
    assert (label != IGNORE_INDEX).sum() == sum(min(3, (mask == c).sum()) for c in np.unique(mask))
    assert present >= 2
    ds.set_epoch(5)
    _, label_again = ds[0]
    torch.testing.assert_close(label, label_again)  # points are an annotation: fixed per image


def test_dense_supervision_gives_the_mask(tiny_landcoverai):
    source = LandCoverAITiles(tiny_landcoverai, "val")
    ds = PointSupervisedDataset(source, points_per_class=None, crop=None, augment=False)
    _, label = ds[1]
    np.testing.assert_array_equal(label.numpy(), source.load(1).mask)


def test_epoch_draws_are_unique_and_cover_images():
    draws = epoch_draws(4, 10, seed=0, epoch=0)
    assert len(set(draws)) == 10
    assert sorted(d % 4 for d in draws[:4]) == [0, 1, 2, 3]
    assert draws == epoch_draws(4, 10, seed=0, epoch=0)
    assert draws != epoch_draws(4, 10, seed=0, epoch=1)


def test_colour_mask_folders_map_colours_to_ids(tiny_folders):
    table = ClassTable.load(tiny_folders / "classes.json")
    source = ColourMaskFolders(tiny_folders, table, ["train"])
    assert len(source) == 4 and source.keys[0] == "train/scene_0000"
    sample = source.load(0)
    _, expected = generate_scene(48, 5 * 100_003 + 0)
    np.testing.assert_array_equal(sample.mask, expected)


def test_ignore_colours_become_255_and_unknown_colours_are_named(tmp_path):
    table = ClassTable.from_dict({"classes": [{"id": 0, "name": "a", "color": [10, 20, 30]}],
                                  "ignore_colors": [[155, 155, 155]]})
    rgb = np.array([[[10, 20, 30], [155, 155, 155]]], dtype=np.uint8)
    np.testing.assert_array_equal(table.mask_from_colors(rgb), [[0, IGNORE_INDEX]])
    rgb[0, 1] = (1, 2, 3)
    with pytest.raises(ClassTableError, match=r"\[1, 2, 3\] at row 0, column 1"):
        table.mask_from_colors(rgb)


def test_mismatched_image_and_mask_sizes_name_the_file(tmp_path):
    table = ClassTable.load()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(table.colorize(np.zeros((8, 9), np.uint8))).save(tmp_path / "masks" / "x.png")
    with pytest.raises(DatasetError, match=r"x\.png: mask is 9x8 pixels, its image 8x8"):
        ColourMaskFolders(tmp_path, table).load(0)


def test_missing_split_list_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="train.txt not found"):
        LandCoverAITiles(tmp_path, "train")


def test_a_16_bit_image_in_a_mask_dataset_is_refused_not_clipped(tmp_path):
    from training.data.sources import ColourMaskFolders, DatasetError

    table = ClassTable.load()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match="not 8-bit; train on such rasters with --images"):
        ColourMaskFolders(tmp_path, table).load(0)
