"""The map GeoSeg draws from a model trained with forest labels: network and forest together.

The network (trained on the clicks and the forest's confident labels) and the pixel-feature
forest (fitted on the same clicks) are wrong in different places, and a per-pixel answer is
speckled. The map mixes, at every pixel, the network's class probabilities (the blended tile
scores whose argmax is the network's own map) 1 : 3 with the forest's (the first 100 of the
200 trees that labelled the training images), blends each pixel's mix 1 : 3 with its mean over
the photo's regions (:mod:`training.labels.segments`: Felzenszwalb regions at scales 50, 100,
200 and 400, their four means averaged) and takes the argmax. These settings were chosen on
dubai-aerial tiles 3-4 (``training.experiments.fusion_grid``) and scored on tiles 5-6 (10 clicks
per class and photo, seeds 0-2, docs/results.md "The map GeoSeg draws").

The forest is refitted from the :class:`~training.labels.forest.ForestSamples` a training run
keeps (in its checkpoints and the exported model), so the map needs neither the training images
nor a pickled forest.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from training.labels.forest import ForestSamples, Timings, fit_forest, image_probabilities
from training.labels.segments import SegmentSettings, image_segments, region_blend

FOREST_WEIGHT = 0.75
"""Share of the forest in the mean of class probabilities (the network has the rest)."""
REGION_WEIGHT = 0.75
"""Share of the region's mean in each pixel's answer (:func:`training.labels.segments.region_blend`:
1 gives every region one answer, 0 leaves each pixel its own)."""
REGION_SCALES: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0)
"""Felzenszwalb scales of the regions: the mean of each segmentation's region means."""
FOREST_TREES = 100
"""Trees of the map's forest: the first 100 of the 200 that label the training images (the
same ``random_state``), half the CPU of predicting with all of them."""


def mix(network: np.ndarray, forest: np.ndarray, forest_weight: float = FOREST_WEIGHT) -> np.ndarray:
    """(K, H, W): ``network`` and ``forest`` (K, H, W) class probabilities mixed per pixel,
    ``forest_weight`` the forest's share."""
    return (1 - forest_weight) * network + forest_weight * forest


def fuse(network: np.ndarray, forest: np.ndarray, regions: np.ndarray | Sequence[np.ndarray],
         forest_weight: float = FOREST_WEIGHT, region_weight: float = REGION_WEIGHT) -> np.ndarray:
    """(K, H, W) float32: :func:`mix` of ``network`` and ``forest``, then blended with its means
    over ``regions`` (H, W) region ids, or the mean of those means over several segmentations
    (``region_weight`` the mean's share)."""
    return region_blend(mix(network, forest, forest_weight), regions, region_weight)


class ForestFusion:
    """The forest of ``samples`` (fitted once, here) and the regions the fused map is averaged
    in. :meth:`probabilities` fuses a network's probabilities for one image; ``timings`` adds up
    the forest's seconds (features and predicting)."""

    def __init__(self, samples: ForestSamples, num_classes: int,
                 scales: Sequence[float] = REGION_SCALES, forest_weight: float = FOREST_WEIGHT,
                 region_weight: float = REGION_WEIGHT, trees: int = FOREST_TREES) -> None:
        self.samples, self.num_classes = samples, num_classes
        self.segments = [SegmentSettings(scale=float(s)) for s in scales]
        self.forest_weight, self.region_weight = forest_weight, region_weight
        self.timings = Timings()
        settings = replace(samples.settings, n_estimators=trees)
        self.forest: Any = fit_forest(samples.x, samples.y, settings, self.timings)

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
