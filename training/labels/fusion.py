"""The map GeoSeg draws from a model trained with forest labels: network and forest together.

The network (trained on the clicks and the forest's confident labels) and the pixel-feature
forest (fitted on the same clicks) are wrong in different places, and a per-pixel answer is
speckled. The map mixes, at every pixel, the network's class probabilities (the blended tile
scores whose argmax is the network's own map) 1 : 3 with the forest's, blends each pixel's mix
1 : 3 with its mean over the photo's regions (:mod:`training.labels.segments`: Felzenszwalb
regions, scale 100) and takes the argmax. The weights were chosen on dubai-aerial tiles 3-4
(``training.experiments.fusion_grid``); applied to tiles 5-6 (10 clicks per class and photo,
seeds 0-2, docs/results.md) the map scored 48.92 % mIoU across scenes and 62.05 % on the same
scene, against 41.63 % and 52.90 % for the network alone and 42.50 % and 54.04 % for the forest
peer.

The forest is refitted from the :class:`~training.labels.forest.ForestSamples` a training run
keeps (in its checkpoints and the exported model), so the map needs neither the training images
nor a pickled forest.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from training.labels.forest import ForestSamples, Timings, image_probabilities
from training.labels.segments import SegmentSettings, image_segments, region_blend

FOREST_WEIGHT = 0.75
"""Share of the forest in the mean of class probabilities (the network has the rest)."""
REGION_WEIGHT = 0.75
"""Share of the region's mean in each pixel's answer (:func:`training.labels.segments.region_blend`:
1 gives every region one answer, 0 leaves each pixel its own)."""
REGION_SCALES: tuple[float, ...] = (100.0,)
"""Felzenszwalb scales of the regions (several: the mean of each segmentation's region means)."""
NETWORK_VIEWS = 1
"""Views of the image (flips and turns, :data:`DIHEDRAL`) the network's probabilities are
averaged over."""


def fuse(network: np.ndarray, forest: np.ndarray, regions: np.ndarray | Sequence[np.ndarray],
         forest_weight: float = FOREST_WEIGHT, region_weight: float = REGION_WEIGHT) -> np.ndarray:
    """(K, H, W) float32: ``network`` and ``forest`` (K, H, W) class probabilities mixed
    (``forest_weight`` the forest's share), then blended with their means over ``regions``
    (H, W) region ids, or the mean of those means over several segmentations
    (``region_weight`` the mean's share)."""
    mixed = (1 - forest_weight) * network + forest_weight * forest
    return region_blend(mixed, regions, region_weight)


class ForestFusion:
    """The forest of ``samples`` (fitted once, here) and the regions the fused map is averaged
    in. :meth:`network` gives a network's probabilities for one image (over ``views`` of it),
    :meth:`probabilities` fuses them with the forest's; ``timings`` adds up the forest's seconds
    (features and predicting)."""

    def __init__(self, samples: ForestSamples, num_classes: int,
                 scales: Sequence[float] = REGION_SCALES, forest_weight: float = FOREST_WEIGHT,
                 region_weight: float = REGION_WEIGHT, views: int = NETWORK_VIEWS) -> None:
        if views not in (1, 2, 4, 8):
            raise ValueError(f"views must be 1, 2, 4 or 8, not {views}")
        self.samples, self.num_classes = samples, num_classes
        self.segments = [SegmentSettings(scale=float(s)) for s in scales]
        self.forest_weight, self.region_weight, self.views = forest_weight, region_weight, views
        self.timings = Timings()
        self.forest: Any = samples.fit(self.timings)

    def network(self, image: np.ndarray,
                probabilities_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """(K, H, W) float32: ``probabilities_of`` (an image (h, w, 3) to the network's (K, h, w)
        class probabilities) averaged over the fusion's ``views`` of ``image`` (H, W, 3)."""
        if self.views == 1:
            return probabilities_of(image)
        return mean_over_views(image, probabilities_of, self.views)

    def probabilities(self, image: np.ndarray, network: np.ndarray) -> np.ndarray:
        """(K, H, W) float32: ``network`` (K, H, W) class probabilities of ``image`` (H, W, 3)
        uint8 mixed with the forest's, then blended with their means over the image's regions."""
        if network.shape != (self.num_classes, *image.shape[:2]):
            raise ValueError(f"network probabilities {network.shape} for an image of "
                             f"{image.shape[:2]} and {self.num_classes} classes")
        forest = image_probabilities(self.forest, image, self.num_classes, self.samples.stack,
                                     timings=self.timings)
        regions = [image_segments(image, settings) for settings in self.segments]
        return fuse(network, forest, regions, self.forest_weight, self.region_weight)

    def classes(self, image: np.ndarray, network: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids of :meth:`probabilities`."""
        return self.probabilities(image, network).argmax(0).astype(np.uint8)


DIHEDRAL = ((False, False, False), (False, False, True), (False, True, False), (False, True, True),
            (True, False, False), (True, False, True), (True, True, False), (True, True, True))
"""The 8 views of an image under flips and 90-degree turns, as (transpose, flip rows, flip
columns): the first 2 add the left-right mirror, the first 4 both mirrors (and so the half
turn), all 8 the quarter turns too."""


def view_probabilities(image: np.ndarray, probabilities_of: Callable[[np.ndarray], np.ndarray],
                       views: int) -> Iterator[np.ndarray]:
    """``probabilities_of`` (an (h, w, 3) image to its (K, h, w) class probabilities) on each of
    the first ``views`` (1, 2, 4 or 8) :data:`DIHEDRAL` views of ``image`` (H, W, 3), each
    turned back onto the image's pixels: (K, H, W) arrays, in that order."""
    if views not in (1, 2, 4, 8):
        raise ValueError(f"views must be 1, 2, 4 or 8, not {views}")
    for transpose, flip_rows, flip_cols in DIHEDRAL[:views]:
        rows, cols = slice(None, None, -1 if flip_rows else 1), slice(None, None, -1 if flip_cols else 1)
        view = (image.transpose(1, 0, 2) if transpose else image)[rows, cols]
        probs = probabilities_of(np.ascontiguousarray(view))[:, rows, cols]
        yield probs.transpose(0, 2, 1) if transpose else probs


def mean_over_views(image: np.ndarray, probabilities_of: Callable[[np.ndarray], np.ndarray],
                    views: int) -> np.ndarray:
    """(K, H, W) float32: the mean of :func:`view_probabilities` (``views`` of ``image``)."""
    total = np.zeros(0, np.float32)
    for k, probs in enumerate(view_probabilities(image, probabilities_of, views)):
        total = probs.astype(np.float32) if k == 0 else total + probs
    return np.ascontiguousarray(total / views, dtype=np.float32)
