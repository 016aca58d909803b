"""Datasets: where images and dense masks come from, and how training samples are made.

Sources yield :class:`Sample` (RGB (H, W, 3) uint8, class-id mask (H, W) uint8, 255 = no label):

- :class:`LandCoverAITiles`: LandCover.ai after its ``split.py``: ``output/<stem>.jpg`` and
  ``output/<stem>_m.png``, split lists ``train.txt`` / ``val.txt`` / ``test.txt``;
- :class:`LandCoverAIOrthophotos`: the original ``images/*.tif`` + ``masks/*.tif`` orthophotos,
  cut into tiles on the fly (windowed reads); split by file: sorted names, every 5th to val;
- :class:`ColourMaskFolders`: folders holding ``images/`` and colour-coded ``masks/`` (same stem,
  ``.png``), with their own class table (mask colour -> id, ignore colours -> 255).

:class:`PointSupervisedDataset` turns a source into training tensors: sparse point labels
(simulated once per image, or read from a point file) or the dense mask, random crop, and
flips / 90-degree rotations applied identically to image and label.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model.class_table import IGNORE_INDEX, ClassTable
from training.points.files import Points, points_to_label, simulate_points

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset folder that does not hold what it should; the message names the file."""


@dataclass
class Sample:
    """One image with its dense mask. ``image`` (H, W, 3) uint8 RGB, ``mask`` (H, W) uint8."""

    key: str
    image: np.ndarray
    mask: np.ndarray


class SampleSource(Protocol):
    """Indexable images with dense masks."""

    keys: list[str]

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...

    def size(self, index: int) -> tuple[int, int]:
        """(H, W) in pixels, without decoding the pixels where possible."""
        ...


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
"""Pillow modes of images that are not 8-bit per band."""


def read_rgb(path: Path, scale: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 of an 8-bit image; DatasetError for wider ones (Pillow would clip them)."""
    with Image.open(path) as src:
        if src.mode in WIDE_MODES:
            raise DatasetError(f"{path}: {src.mode} image, not 8-bit; train on such rasters with "
                               f"--images and --points, which scale every band by one rule "
                               f"that the exported model keeps")
        im = src.convert("RGB")
        if scale != 1.0:
            im = im.resize(_scaled(im.size, scale), Image.Resampling.BILINEAR)
        return np.asarray(im)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _check_pair(key: str, image: np.ndarray, mask: np.ndarray, where: Path) -> Sample:
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} pixels, its image "
                           f"{image.shape[1]}x{image.shape[0]}")
    return Sample(key, image, mask)


class LandCoverAITiles:
    """LandCover.ai 512x512 tiles as written by its ``split.py`` (see module doc)."""

    def __init__(self, root: str | Path, split: str, num_classes: int = 5) -> None:
        self.root = Path(root)
        listing = self.root / f"{split}.txt"
        if not listing.is_file():
            raise DatasetError(f"{listing} not found: expected LandCover.ai's split lists")
        self.keys = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
        self.num_classes = num_classes
        for key in self.keys:
            for path in (self._image(key), self._mask(key)):
                if not path.is_file():
                    raise DatasetError(f"{path} listed in {listing} but missing")

    def _image(self, key: str) -> Path:
        return self.root / "output" / f"{key}.jpg"

    def _mask(self, key: str) -> Path:
        return self.root / "output" / f"{key}_m.png"

    def __len__(self) -> int:
        return len(self.keys)

    def image_file(self, index: int) -> Path:
        return self._image(self.keys[index])

    def size(self, index: int) -> tuple[int, int]:
        with Image.open(self._image(self.keys[index])) as im:
            return im.size[1], im.size[0]

    def load(self, index: int) -> Sample:
        key = self.keys[index]
        with Image.open(self._mask(key)) as im:
            mask = np.asarray(im.convert("L") if im.mode not in ("L", "P") else im).copy()
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise DatasetError(f"{self._mask(key)}: value {mask[bad][0]} is not a class id")
        return _check_pair(key, read_rgb(self._image(key)), mask, self._mask(key))


class LandCoverAIOrthophotos:
    """Original LandCover.ai orthophotos, tiled on the fly into ``tile`` x ``tile`` windows."""

    def __init__(self, root: str | Path, split: str, tile: int = 512) -> None:
        import rasterio  # only this layout needs GDAL

        self._rasterio = rasterio
        self.root = Path(root)
        images = sorted((self.root / "images").glob("*.tif"))
        if not images:
            raise DatasetError(f"{self.root / 'images'}: no .tif orthophotos")
        chosen = [p for i, p in enumerate(images) if (i % 5 == 4) == (split != "train")]
        self.tile = tile
        self.windows: list[tuple[Path, int, int, int, int]] = []
        self.keys = []
        for path in chosen:
            mask = self.root / "masks" / path.name
            if not mask.is_file():
                raise DatasetError(f"{mask}: mask of {path} missing")
            with rasterio.open(path) as src:
                h, w = src.height, src.width
            for y in range(0, h - tile + 1, tile):
                for x in range(0, w - tile + 1, tile):
                    self.windows.append((path, y, x, tile, tile))
                    self.keys.append(f"{path.stem}_{y}_{x}")

    def __len__(self) -> int:
        return len(self.windows)

    def size(self, index: int) -> tuple[int, int]:
        return self.tile, self.tile

    def load(self, index: int) -> Sample:
        path, y, x, h, w = self.windows[index]
        window = self._rasterio.windows.Window(x, y, w, h)
        with self._rasterio.open(path) as src:
            image = np.moveaxis(src.read((1, 2, 3), window=window), 0, -1)
        with self._rasterio.open(self.root / "masks" / path.name) as src:
            mask = src.read(1, window=window)
        return _check_pair(self.keys[index], image.astype(np.uint8), mask.astype(np.uint8), path)


class ColourMaskFolders:
    """Images with colour-coded masks: ``<root>/<dir>/images/*`` and ``<root>/<dir>/masks/*.png``.

    ``dirs`` selects sub-folders (e.g. ``tile1``..``tile4``); empty means ``root`` itself.
    Keys are ``<dir>/<stem>``. ``scale`` resizes images (bilinear) and masks (nearest).
    """

    def __init__(self, root: str | Path, table: ClassTable, dirs: Sequence[str] = (),
                 scale: float = 1.0) -> None:
        self.root = Path(root)
        self.table = table
        self.scale = scale
        self.pairs: list[tuple[Path, Path]] = []
        self.keys = []
        for d in dirs or [""]:
            folder = self.root / d
            images = sorted(p for p in (folder / "images").glob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DatasetError(f"{folder / 'images'}: no images found")
            for image in images:
                mask = folder / "masks" / f"{image.stem}.png"
                if not mask.is_file():
                    raise DatasetError(f"{mask}: mask of {image} missing")
                self.pairs.append((image, mask))
                self.keys.append(f"{d}/{image.stem}" if d else image.stem)

    def __len__(self) -> int:
        return len(self.pairs)

    def image_file(self, index: int) -> Path:
        return self.pairs[index][0]

    def size(self, index: int) -> tuple[int, int]:
        with Image.open(self.pairs[index][0]) as im:
            w, h = _scaled(im.size, self.scale)
        return h, w

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.pairs[index]
        image = read_rgb(image_path, self.scale)
        with Image.open(mask_path) as src:
            im = src.convert("RGB")
            if self.scale != 1.0:
                im = im.resize(_scaled(im.size, self.scale), Image.Resampling.NEAREST)
            try:
                mask = self.table.mask_from_colors(np.asarray(im))
            except ValueError as exc:
                raise DatasetError(f"{mask_path}: {exc}") from None
        return _check_pair(self.keys[index], image, mask, mask_path)


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal / vertical flip and 90-degree rotation, identical on both.

    ``image`` (H, W, 3), ``label`` (H, W); returns contiguous copies (H', W' swap on odd turns).
    """
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if rng.random() < 0.5:
        image, label = image[::-1], label[::-1]
    turns = int(rng.integers(4))
    image, label = np.rot90(image, turns, axes=(0, 1)), np.rot90(label, turns, axes=(0, 1))
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def random_crop(image: np.ndarray, label: np.ndarray, crop: int, rng: np.random.Generator,
                fill: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """A ``crop`` x ``crop`` window; smaller inputs are padded at the bottom / right (image 0,
    label ``fill``)."""
    h, w = label.shape
    if h < crop or w < crop:
        ph, pw = max(0, crop - h), max(0, crop - w)
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=fill)
        h, w = label.shape
    y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    return image[y:y + crop, x:x + crop], label[y:y + crop, x:x + crop]


def _torch_ready(array: np.ndarray) -> np.ndarray:
    """``array`` as torch.from_numpy takes it: writable, C order, no negative stride (numpy
    calls a flipped 1-pixel array C-contiguous, so np.require alone keeps its stride)."""
    array = np.require(array, requirements=("C", "W"))  # decoded arrays may be read-only
    return array.copy() if any(s < 0 for s in array.strides) else array


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 + (H, W) uint8 -> float32 (3, H, W) in [0, 1] + int64 (H, W)."""
    return torch.from_numpy(_torch_ready(image)).permute(2, 0, 1).float().div_(255.0), \
        torch.from_numpy(_torch_ready(label)).long()


def image_from_tensor(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensors`' image part: (3, H, W) float32 in [0, 1] -> (H, W, 3)
    uint8 (exact for a tensor that came from uint8)."""
    return x.detach().cpu().permute(1, 2, 0).mul(255.0).round().clamp(0, 255).to(
        torch.uint8).numpy()


class PointSupervisedDataset(Dataset):
    """Training tensors from a source: point labels (or dense masks), cropped and augmented.

    ``points_per_class``: simulate that many points per class per image, once (seeded by
    ``seed`` and the image index), or ``None`` for dense supervision. ``annotations``: real
    points per image key, used instead of simulation. Items: image float32 (3, crop, crop) in
    [0, 1], label int64 (crop, crop) with 255 at unlabelled pixels. Randomness of crops and
    augmentation comes from (seed, epoch, draw): item ``draw`` is image ``draw % len(self)``, so
    a sampler can ask for one image several times per epoch with different crops
    (see :func:`epoch_draws`), and runs are reproducible.
    """

    def __init__(self, source: SampleSource, points_per_class: Optional[int], seed: int = 0,
                 crop: Optional[int] = 256, augment: bool = True,
                 annotations: Optional[dict[str, Points]] = None) -> None:
        self.source = source
        self.points_per_class = points_per_class
        self.seed = seed
        self.crop = crop
        self.augment = augment
        self.annotations = annotations
        self.epoch = 0
        self._points: dict[int, Points] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def points(self, index: int, mask: np.ndarray) -> Points:
        """The fixed point annotation of image ``index`` (simulated on first use)."""
        if index not in self._points:
            if self.annotations is not None:
                self._points[index] = self.annotations.get(self.source.keys[index],
                                                           np.zeros((0, 3), np.int64))
            else:
                assert self.points_per_class is not None
                self._points[index] = simulate_points(mask, self.points_per_class,
                                                      [self.seed, index])
        return self._points[index]

    def label(self, index: int, mask: np.ndarray) -> np.ndarray:
        """The training label of image ``index``: sparse points or the dense mask (H, W)."""
        if self.points_per_class is None and self.annotations is None:
            return mask
        return points_to_label(self.points(index, mask), mask.shape)

    pad_label = IGNORE_INDEX
    """Label of the pixels a crop adds beyond a small image."""

    def training_label(self, index: int, sample: Sample) -> np.ndarray:
        """The (H, W) uint8 target of image ``index`` as training sees it."""
        return self.label(index, sample.mask)

    def __getitem__(self, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = draw % len(self.source)
        sample = self.source.load(index)
        image, label = sample.image, self.training_label(index, sample)
        rng = np.random.default_rng([self.seed, self.epoch, draw])
        if self.crop:
            image, label = random_crop(image, label, self.crop, rng, self.pad_label)
        if self.augment:
            image, label = augment(image, label, rng)
        return to_tensors(image, label)


def epoch_draws(num_images: int, num_draws: int, seed: int, epoch: int) -> list[int]:
    """Item numbers for one epoch: shuffled passes over the images, ``num_draws`` in all.

    Draw ``k`` of pass ``p`` is ``p * num_images + image``: unique within the epoch, so
    :class:`PointSupervisedDataset` gives repeated images fresh crops.
    """
    rng = np.random.default_rng([seed, epoch, 7919])
    draws: list[int] = []
    passes = 0
    while len(draws) < num_draws:
        draws.extend(int(i) + passes * num_images for i in rng.permutation(num_images))
        passes += 1
    return draws[:num_draws]
