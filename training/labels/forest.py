"""A random forest on per-pixel multi-scale filter features, fitted on clicked points.

The classical way to map land cover from clicks (ilastik's pixel classification, QGIS SCP, Orfeo
ToolBox, Earth Engine): every pixel is described by ``skimage.feature.multiscale_basic_features``
of its RGB image (intensity, Sobel edges and the two Hessian eigenvalues of each band, smoothed
at 6 scales, sigma 0.7-16 px: 72 numbers), and a scikit-learn random forest learns the classes
from the clicked pixels alone. It fits in seconds and maps a photo in a few more.

GeoSeg uses it twice: as the peer the network is measured against (``geoseg peer-forest``,
``benchmarks/peer_forest.py``) and as a teacher (``geoseg train --expand forest``,
:class:`ForestExpander`): the forest fitted on the clicks of every training image labels the
pixels of those images it is confident about (largest class probability at least
``threshold``), and the network learns from the clicks and those labels.
"""
from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.class_table import IGNORE_INDEX
from training.labels.expansion import Expansion
from training.labels.segments import SegmentSettings, image_segments, segment_mean
from training.points.files import Points, label_to_points

FOREST_THRESHOLD = 0.5
"""Default confidence (largest class probability) above which the forest labels a pixel.
Measured on the 36 dubai photos of tiles 1-4 (10 clicks per class and photo): 0.5 labels
about half of the pixels, 82 % of them right."""

FEATURE_MARGIN = 72
"""Context in pixels around a block for its features to equal the whole image's: 4 x the
largest sigma (16 px), where scikit-image truncates its Gaussians, and a few pixels for the
derivatives after them (measured: exactly, where 64 px left differences of 3e-7)."""

FEATURE_BLOCK = 512
"""Side in pixels of the blocks an image's features are computed in: scikit-image works in
float64, so 72 features over a whole 2048 px window would take 2.4 GB; a 656 px read (512 +
2 x 72 of context) peaks at about 250 MB."""

PREDICT_CHUNK = 262_144
"""Pixels per ``predict_proba`` call: bounds the (pixels, trees) work arrays."""


@dataclass(frozen=True)
class FeatureStack:
    """Arguments of ``skimage.feature.multiscale_basic_features`` (sigmas in pixels of the image
    as read, i.e. after ``--scale``). The defaults give 72 features on RGB: 3 channels x 6 scales
    x (intensity, Sobel edges, 2 Hessian eigenvalues)."""

    intensity: bool = True
    edges: bool = True
    texture: bool = True
    sigma_min: float = 0.7
    sigma_max: float = 16.0
    num_sigma: int = 6


@dataclass(frozen=True)
class ForestSettings:
    """Arguments of ``sklearn.ensemble.RandomForestClassifier``."""

    n_estimators: int = 200
    n_jobs: int = -1
    random_state: int = 0


@dataclass(frozen=True)
class ForestSamples:
    """What a forest is fitted on, kept so that the same forest can be fitted again where the
    training images are not at hand (an exported model, ``geoseg predict``): ``x`` (N, F)
    float32 the features of the N clicked pixels, ``y`` (N,) int64 their class ids, and the
    feature stack and forest settings. A refit is exact: scikit-learn's forest is a function of
    the samples and ``random_state``. 1670 clicks of 72 features: 0.5 MB."""

    x: np.ndarray
    y: np.ndarray
    stack: FeatureStack = FeatureStack()
    settings: ForestSettings = ForestSettings()

    def fit(self, timings: Timings | None = None) -> Any:
        """The forest (a fitted ``RandomForestClassifier``)."""
        return fit_forest(self.x, self.y, self.settings, timings)

    def to_bytes(self) -> bytes:
        """The samples as one ``.npz`` file's bytes (arrays and a JSON of the settings; no
        pickle, so a model file with them is as safe to open as one without)."""
        buffer = io.BytesIO()
        meta = json.dumps({"stack": asdict(self.stack), "settings": asdict(self.settings)})
        np.savez(buffer, x=self.x, y=self.y, meta=np.frombuffer(meta.encode(), np.uint8))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ForestSamples:
        """Samples from :meth:`to_bytes`. Raises ValueError when ``data`` does not hold them."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode())
                x, y = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
            stack, settings = FeatureStack(**meta["stack"]), ForestSettings(**meta["settings"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not forest samples ({exc})") from None
        if x.ndim != 2 or y.shape != (x.shape[0],) or not len(y):
            raise ValueError(f"forest samples of shapes {x.shape} and {y.shape}")
        return cls(x, y, stack, settings)


@dataclass
class Timings:
    """Seconds spent on features, fitting and predicting."""

    features: float = 0.0
    fit: float = 0.0
    predict: float = 0.0


def pixel_features(image: np.ndarray, stack: FeatureStack = FeatureStack()) -> np.ndarray:
    """Features of every pixel: ``image`` (H, W, 3) uint8 RGB -> (H, W, F) float32."""
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(image, channel_axis=-1, **asdict(stack)).astype(np.float32,
                                                                                    copy=False)


def timed_features(image: np.ndarray, stack: FeatureStack, timings: Timings) -> np.ndarray:
    """:func:`pixel_features` of ``image``, its seconds added to ``timings.features``."""
    t0 = time.perf_counter()
    features = pixel_features(image, stack)
    timings.features += time.perf_counter() - t0
    return features


def features_at(features: np.ndarray, points: Points) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``features`` (H, W, F) at ``points`` (K, 3) int64 (row, col, class id): the
    (K, F) float32 training samples and their (K,) int64 class ids."""
    return features[points[:, 0], points[:, 1]], points[:, 2].astype(np.int64)


def fit_forest(x: np.ndarray, y: np.ndarray, settings: ForestSettings = ForestSettings(),
               timings: Timings | None = None) -> Any:
    """A ``RandomForestClassifier`` fitted on ``x`` (K, F) float32 and ``y`` (K,) int64."""
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    forest = RandomForestClassifier(**asdict(settings)).fit(x, y)
    if timings is not None:
        timings.fit += time.perf_counter() - t0
    return forest


def class_probabilities(forest: Any, features: np.ndarray, num_classes: int) -> np.ndarray:
    """The forest's probabilities of every class id 0..K-1 for ``features`` (H, W, F): (K, H, W)
    float32 (a class the forest never saw gets 0 everywhere)."""
    h, w, f = features.shape
    flat = features.reshape(-1, f)
    out = np.zeros((num_classes, h * w), np.float32)
    seen = np.asarray(forest.classes_, dtype=np.int64)
    for start in range(0, flat.shape[0], PREDICT_CHUNK):
        part = forest.predict_proba(flat[start:start + PREDICT_CHUNK])
        out[seen, start:start + part.shape[0]] = part.T
    return out.reshape(num_classes, h, w)


Box = tuple[int, int, int, int]
"""(y0, y1, x0, x1): rows y0..y1-1 and columns x0..x1-1 of an image."""


def feature_blocks(height: int, width: int, block: int = FEATURE_BLOCK,
                   margin: int = FEATURE_MARGIN) -> list[tuple[Box, Box]]:
    """(kept, read) boxes covering a ``height`` x ``width`` image: each kept block of at most
    ``block`` x ``block`` pixels, read with up to ``margin`` pixels of context (within the image),
    so that the kept part of a read's features equals the whole image's."""
    out = []
    for y in range(0, height, block):
        for x in range(0, width, block):
            keep = (y, min(y + block, height), x, min(x + block, width))
            read = (max(0, y - margin), min(height, keep[1] + margin),
                    max(0, x - margin), min(width, keep[3] + margin))
            out.append((keep, read))
    return out


def image_probabilities(forest: Any, image: np.ndarray, num_classes: int,
                        stack: FeatureStack = FeatureStack(), block: int = FEATURE_BLOCK,
                        timings: Timings | None = None) -> np.ndarray:
    """The forest's class probabilities for every pixel of ``image`` (H, W, 3) uint8: (K, H, W)
    float32, the features computed in :func:`feature_blocks` (equal to the whole image's
    features, in bounded memory)."""
    h, w = image.shape[:2]
    out = np.zeros((num_classes, h, w), np.float32)
    for (y0, y1, x0, x1), (ry0, ry1, rx0, rx1) in feature_blocks(h, w, block):
        t0 = time.perf_counter()
        features = pixel_features(image[ry0:ry1, rx0:rx1], stack)
        t1 = time.perf_counter()
        inner = features[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
        out[:, y0:y1, x0:x1] = class_probabilities(forest, inner, num_classes)
        if timings is not None:
            timings.features += t1 - t0
            timings.predict += time.perf_counter() - t1
    return out


def sure_classes(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) uint8: the class of largest probability in ``probs`` (K, H, W) where that
    probability is at least ``threshold``, 255 elsewhere."""
    return np.where(probs.max(0) >= threshold, probs.argmax(0), IGNORE_INDEX).astype(np.uint8)


def confident_labels(probs: np.ndarray, sparse: np.ndarray, threshold: float) -> Expansion:
    """Clicks of ``sparse`` (H, W) uint8 (255 = unlabelled) plus, at every other pixel whose
    largest probability in ``probs`` (K, H, W) is at least ``threshold``, that class (an
    :class:`~training.labels.expansion.Expansion` with no segments)."""
    if probs.shape[1:] != sparse.shape:
        raise ValueError(f"probabilities {probs.shape[1:]} and label {sparse.shape} differ in size")
    labels = sure_classes(probs, threshold)
    clicked = sparse != IGNORE_INDEX
    labels[clicked] = sparse[clicked]
    expanded = (labels != IGNORE_INDEX) & ~clicked
    return Expansion(labels, expanded, 0, 0, 0)


@dataclass(frozen=True)
class ForestLabelStats:
    """What the forest labelled: share of the images' pixels it labelled (clicks excluded), and
    the seconds it took (features, fit, predict)."""

    images: int
    clicks: int
    labelled_share: float
    seconds: dict[str, float]

    @classmethod
    def of(cls, images: int, clicks: int, labelled: int, pixels: int,
           timings: Timings) -> ForestLabelStats:
        """Stats of ``labelled`` pixels out of ``pixels`` and the seconds of ``timings``."""
        seconds = {k: round(v, 2) for k, v in asdict(timings).items()}
        return cls(images, clicks, labelled / max(pixels, 1), seconds)

    def summary(self, where: str) -> str:
        """One line for the log: ``where`` names what was labelled (e.g. "the pixels of 36
        images")."""
        return (f"forest labels: {100 * self.labelled_share:.1f}% of {where}, from "
                f"{self.clicks} clicks ({sum(self.seconds.values()):.0f} s)")


def click_samples(images_and_labels: Iterable[tuple[np.ndarray, np.ndarray]],
                  stack: FeatureStack = FeatureStack(), settings: ForestSettings = ForestSettings(),
                  timings: Timings | None = None, progress: Any = None) -> ForestSamples:
    """The features and classes of every click: ``images_and_labels`` yields (H, W, 3) uint8
    images with their (H, W) uint8 sparse labels (clicks, 255 elsewhere). ValueError without
    any click."""
    xs, ys = [], []
    for image, sparse in progress_over(list(images_and_labels), progress, "forest features"):
        features = timed_features(image, stack, timings if timings is not None else Timings())
        x, y = features_at(features, label_to_points(sparse))
        xs.append(x)
        ys.append(y)
    y_all = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    if y_all.size == 0:
        raise ValueError("the forest needs at least one clicked point")
    return ForestSamples(np.concatenate(xs), y_all, stack, settings)


class ForestExpander:
    """Packed training targets labelled by a forest fitted on the clicks of all training images.

    ``images_and_labels`` yields, for image ``i`` of the training set in order, its (H, W, 3)
    uint8 RGB image and its (H, W) uint8 sparse label (clicks, 255 elsewhere). The forest is
    fitted on every click of every image (features computed once per image; only the clicked
    rows are kept), then each image is labelled by :func:`confident_labels` (with ``segments``,
    from its probabilities averaged within the image's regions, :mod:`training.labels.segments`;
    their seconds count as predicting); ``expansion(i)``
    returns the result. Cost on 2 CPU cores, 36 dubai photos at scale 0.5 (about 0.6 Mpx each):
    about 2 minutes, features twice included.
    """

    def __init__(self, images_and_labels: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int,
                 threshold: float = FOREST_THRESHOLD, stack: FeatureStack = FeatureStack(),
                 settings: ForestSettings = ForestSettings(), progress: Any = None,
                 refreshable: bool = False, segments: SegmentSettings | None = None) -> None:
        self.threshold, self.stack, self.settings = threshold, stack, settings
        self.segments = segments
        self.timings = Timings()
        pairs = list(images_and_labels)
        self.samples = click_samples(pairs, stack, settings, self.timings, progress)
        self.forest = self.samples.fit(self.timings)
        self._labels: list[Expansion] = []
        self._pairs = pairs if refreshable else []  # kept for refresh() only
        self._probs: list[np.ndarray] = []
        for image, sparse in progress_over(pairs, progress, "forest labels"):
            features = timed_features(image, stack, self.timings)
            t0 = time.perf_counter()
            probs = class_probabilities(self.forest, features, num_classes)
            if segments is not None:
                probs = segment_mean(probs, image_segments(image, segments))
            self.timings.predict += time.perf_counter() - t0
            self._labels.append(confident_labels(probs, sparse, threshold))
            if refreshable:  # (K, H, W) float16 per image: hundreds of MB on real photos
                self._probs.append(probs.astype(np.float16))
        self.clicks = len(self.samples.y)

    def refresh(self, network_probabilities: Callable[[np.ndarray], np.ndarray]) -> float:
        """Co-training: relabel every image from the mean of the forest's probabilities and
        ``network_probabilities(image)`` ((H, W, 3) uint8 -> (K, H, W) float32), with the same
        threshold and the clicks kept (needs ``refreshable=True``). Returns the share of pixels
        now labelled."""
        if not self._probs:
            raise RuntimeError("this ForestExpander was built without refreshable=True")
        for index, (image, sparse) in enumerate(self._pairs):
            mean = (self._probs[index].astype(np.float32) + network_probabilities(image)) / 2
            self._labels[index] = confident_labels(mean, sparse, self.threshold)
        labelled = sum(int(e.expanded.sum()) for e in self._labels)
        return labelled / max(sum(e.labels.size for e in self._labels), 1)

    def expansion(self, index: int) -> Expansion:
        """The labels of training image ``index``."""
        return self._labels[index]

    def stats(self) -> ForestLabelStats:
        """Share of pixels labelled and seconds spent."""
        return ForestLabelStats.of(len(self._labels), self.clicks,
                                   sum(int(e.expanded.sum()) for e in self._labels),
                                   sum(e.labels.size for e in self._labels), self.timings)


def progress_over(items: list[Any], progress: Any, desc: str) -> Iterable[Any]:
    """``items`` through ``progress(items, desc=...)`` (for example tqdm) when given."""
    return progress(items, desc=desc) if progress is not None else items

