"""Do suggested clicks beat random ones? A simulation with an oracle on images with dense masks.

The learner is the one the labelling page repaints its map with (``geoseg label``): the pixel-
feature forest (``training.labels.forest``), fitted on the clicks so far, predicting every image.
Budgets count clicks "per class and photo": c means c x (number of (photo, class present) pairs)
clicks in all. Strategies, each from the same seed:

- ``random``: c random pixels of each class present in each photo (``simulate_points``, the
  protocol of ``--points-per-class c``; it knows each photo's classes);
- ``uniform``: the same number of clicks at random pixels (a user clicking anywhere);
- ``suggested``: 2 random clicks per class and photo, then rounds: each photo gets one click per
  class it has clicks of, placed by ``training.points.suggest.suggest_clicks`` (uncertainty of the
  forest, disagreement with a logistic-regression second opinion, spread over classes and
  space); an oracle answers each from the mask;
- ``corrections``: as ``suggested``, but the clicks go to pixels the map has wrong (chosen at
  random among them, spread the same way): a user who looks at the map and clicks its errors.

Every image is scored on a grid of every ``--stride``-th pixel in each direction (features are
computed on the whole image first, so a grid pixel's features are the whole image's); clicks are
placed on that grid. mIoU over the images, classes present in truth or prediction, as GeoSeg's
validation.

    python -m training.experiments.click_suggestions --data DUBAI --dataset folders \\
        --classes training/tables/dubai-aerial.json --train-dirs tile5 tile6 \\
        --val-dirs tile5 tile6 --scale 0.5 --seeds 0 1 2 --out docs/results/click-suggestions
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common.cli import at_least, fail, parser, write_json
from model.class_table import IGNORE_INDEX
from training.data.options import add_data_args, load_table, open_source
from training.data.sources import DatasetError
from training.labels.forest import ForestSettings, class_probabilities, fit_forest, pixel_features
from training.labels.segments import SegmentSettings, image_segments, region_blend
from training.points.files import Points, simulate_points
from training.points.suggest import SuggestionSettings, second_opinion, suggest_clicks
from training.run.metrics import confusion_matrix, scores

STRATEGIES = ("random", "uniform", "suggested", "corrections")
FIRST_CLICKS = 2
"""Random clicks per class and photo before the first suggestion."""


@dataclass
class GridImage:
    """One image on the scoring grid: ``features`` (h, w, F) float32, ``mask`` (h, w) uint8,
    ``regions`` (h, w) int64 region ids of the whole image's segmentation on the grid (None:
    the maps are not averaged within regions)."""

    key: str
    features: np.ndarray
    mask: np.ndarray
    regions: Optional[np.ndarray] = None

    @property
    def classes(self) -> int:
        """Classes present in the mask."""
        return int(np.count_nonzero(np.unique(self.mask) != IGNORE_INDEX))


def load_grid(source: Any, stride: int, segments: Optional[SegmentSettings] = None
              ) -> list[GridImage]:
    """Every image of ``source`` as a :class:`GridImage` (features and, with ``segments``,
    regions of the whole image, then every ``stride``-th pixel)."""
    images = []
    for index in range(len(source)):
        sample = source.load(index)
        features = pixel_features(sample.image)[::stride, ::stride].copy()
        regions = None if segments is None else \
            image_segments(sample.image, segments)[::stride, ::stride].copy()
        images.append(GridImage(sample.key, features, sample.mask[::stride, ::stride].copy(),
                                regions))
        print(f"  features {index + 1}/{len(source)}", end="\r", flush=True)
    print()
    return images


class Learner:
    """The forest on the clicks so far, and what it maps: ``probs[i]`` (K, h, w) per image."""

    def __init__(self, images: list[GridImage], clicks: list[Points], num_classes: int,
                 seed: int, with_second: bool) -> None:
        x = np.concatenate([im.features[c[:, 0], c[:, 1]] for im, c in zip(images, clicks)])
        y = np.concatenate([c[:, 2] for c in clicks]).astype(np.int64)
        forest = fit_forest(x, y, ForestSettings(random_state=seed))
        self.probs = [class_probabilities(forest, im.features, num_classes) for im in images]
        self.second: list[np.ndarray | None] = [None] * len(images)
        if with_second and np.unique(y).size > 1:
            model = second_opinion(x, y, seed)
            self.second = [class_probabilities(model, im.features, num_classes) for im in images]

    def miou(self, images: list[GridImage], num_classes: int, region_weight: float = 0.0
             ) -> float:
        """mIoU (%) of the argmax maps against the masks, over all images; ``region_weight``
        w: of (1 - w) x the probabilities + w x their mean within each image's regions
        (``training.labels.segments.region_blend``; the labelling page's map)."""
        def shown(p: np.ndarray, im: GridImage) -> np.ndarray:
            return p if im.regions is None else region_blend(p, im.regions, region_weight)

        cm = sum(confusion_matrix(shown(p, im).argmax(0), im.mask, num_classes)
                 for p, im in zip(self.probs, images))
        return 100.0 * scores(np.asarray(cm)).miou


def stratified(images: list[GridImage], per_class: int, seed: int) -> list[Points]:
    """``per_class`` random pixels of each class of each image (``simulate_points``)."""
    return [simulate_points(im.mask, per_class, [seed, i]) for i, im in enumerate(images)]


def uniform(images: list[GridImage], counts: list[int], seed: int) -> list[Points]:
    """``counts[i]`` random labelled pixels of image ``i``, labelled from its mask."""
    out = []
    for i, (im, n) in enumerate(zip(images, counts)):
        rng = np.random.default_rng([seed, i, 7])
        where = np.flatnonzero(im.mask.reshape(-1) != IGNORE_INDEX)
        pick = rng.choice(where, size=min(n, where.size), replace=False)
        r, c = np.divmod(pick, im.mask.shape[1])
        out.append(np.stack([r, c, im.mask[r, c]], axis=1).astype(np.int64))
    return out


def answered(picks: np.ndarray, mask: np.ndarray) -> Points:
    """The oracle: suggested (N, 3) (row, col, guess) -> (N, 3) with the mask's class."""
    r, c = picks[:, 0], picks[:, 1]
    return np.stack([r, c, mask[r, c]], axis=1).astype(np.int64)


def next_round(strategy: str, images: list[GridImage], clicks: list[Points], learner: Learner,
               rng: np.random.Generator, settings: SuggestionSettings,
               region_weight: float = 0.0) -> list[Points]:
    """Clicks after one more round: each image gets one click per class it has clicks of.
    ``region_weight``: suggestions and corrections look at the map the page shows, the forest's
    probabilities blended with their region means (0: the per-pixel map)."""
    out = []
    for i, (im, have) in enumerate(zip(images, clicks)):
        count = int(np.unique(have[:, 2]).size)
        valid = im.mask != IGNORE_INDEX
        probs = learner.probs[i] if im.regions is None else \
            region_blend(learner.probs[i], im.regions, region_weight)
        if strategy == "corrections":
            valid &= probs.argmax(0) != im.mask
            picks = suggest_clicks(np.ones_like(probs), None, have, count, rng, valid, settings)
        else:
            picks = suggest_clicks(probs, learner.second[i], have, count, rng, valid, settings)
        out.append(np.concatenate([have, answered(picks, im.mask)]))
    return out


def curve(strategy: str, images: list[GridImage], budgets: list[int], num_classes: int,
          seed: int, settings: SuggestionSettings, region_weights: tuple[float, ...] = (1.0,),
          suggest_weight: float = 0.0) -> list[dict[str, Any]]:
    """mIoU at each budget (clicks per class and photo) for one strategy and seed; where the
    images have regions, also ``miou_regions`` {weight: mIoU} of the maps blended with their
    region means at each of ``region_weights``."""
    rows = []
    pairs = [im.classes for im in images]
    clicks = stratified(images, FIRST_CLICKS, seed)
    rng = np.random.default_rng([seed, 11])
    for per_class in budgets:
        t0 = time.perf_counter()
        if strategy == "random":
            clicks = stratified(images, per_class, seed)
        elif strategy == "uniform":
            clicks = uniform(images, [per_class * n for n in pairs], seed)
        else:
            while per_class > FIRST_CLICKS and sum(len(c) for c in clicks) < per_class * sum(pairs):
                learner = Learner(images, clicks, num_classes, seed, strategy == "suggested")
                before = sum(len(c) for c in clicks)
                clicks = next_round(strategy, images, clicks, learner, rng, settings,
                                    suggest_weight)
                if sum(len(c) for c in clicks) == before:
                    break  # nothing left to suggest
        learner = Learner(images, clicks, num_classes, seed, False)
        miou = learner.miou(images, num_classes)
        row: dict[str, Any] = {"per_class": per_class, "clicks": int(sum(len(c) for c in clicks)),
                               "miou": round(miou, 2), "seconds": round(time.perf_counter() - t0, 1)}
        line = f"mIoU {miou:5.2f}"
        if images and images[0].regions is not None:
            blended = {str(w): round(learner.miou(images, num_classes, w), 2) for w in region_weights}
            row["miou_regions"] = blended
            line += ", regions " + ", ".join(f"w {w} {v:5.2f}" for w, v in blended.items())
        rows.append(row)
        print(f"  {strategy:11s} seed {seed} c={per_class:2d} clicks={rows[-1]['clicks']:5d} "
              f"{line}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m training.experiments.click_suggestions", __doc__)
    add_data_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=at_least(FIRST_CLICKS), nargs="+",
                   default=[2, 3, 4, 5, 6, 8, 10], help="clicks per class and photo")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--stride", type=at_least(1), default=2, help="scoring grid step (px)")
    p.add_argument("--min-distance", type=float, default=SuggestionSettings.min_distance,
                   help="suggestions at least this far apart (grid pixels)")
    p.add_argument("--segments", type=float, default=0.0, metavar="SCALE",
                   help="also score each map averaged within Felzenszwalb regions of this scale "
                        "(the labelling page's quick map; 0: off)")
    p.add_argument("--region-weights", type=float, nargs="+", default=[1.0],
                   help="with --segments: weights w of the region means, (1 - w) x pixel + w x "
                        "region (1: the region mean alone)")
    p.add_argument("--suggest-region-weight", type=float, default=0.0,
                   help="with --segments: suggestions and corrections look at the map blended "
                        "with its region means at this weight (0: the per-pixel map)")
    p.add_argument("--out", type=Path, required=True)
    args: argparse.Namespace = p.parse_args(argv)
    try:
        table = load_table(args)
        source = open_source(args, "val", table)
    except DatasetError as exc:
        return fail(str(exc))
    settings = SuggestionSettings(min_distance=args.min_distance)
    segments = SegmentSettings(scale=args.segments) if args.segments > 0 else None
    images = load_grid(source, args.stride, segments)
    result: dict[str, Any] = {
        "images": len(images), "pairs": sum(im.classes for im in images),
        "stride": args.stride, "first_clicks": FIRST_CLICKS, "settings": asdict(settings),
        "segments": None if segments is None else asdict(segments),
        "suggest_region_weight": args.suggest_region_weight,
        "curves": {}}
    for seed in args.seeds:
        for strategy in args.strategies:
            result["curves"].setdefault(strategy, {})[str(seed)] = curve(
                strategy, images, sorted(args.budgets), len(table.names), seed, settings,
                tuple(args.region_weights), args.suggest_region_weight)
            write_json(args.out / "click-suggestions.json", result)
    print(f"wrote {args.out / 'click-suggestions.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
