"""Where the next clicks would help: suggestions from the current map and a second opinion.

A user who has clicked a few points per class sees a map; the next clicks pay most where that
map is likely wrong. Without the truth, two signs of it are cheap to compute:

- **uncertainty**: the map's own margin, 1 - (largest - second largest class probability);
- **disagreement**: a second, different learner fitted on the same clicks (a linear model on
  the same pixel features, :func:`second_opinion`) names another class.

Each candidate pixel scores ``uncertainty + disagreement_weight * [classes differ]``. The best are
taken in turn over the classes the map gives them (so that every mapped class is questioned,
not only the largest) and never closer than ``min_distance`` pixels to another suggestion or to
an existing click (so that ten suggestions are ten places, not one boundary; where the image
has no room left, the spacing is halved until it has).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.points.files import Points


@dataclass(frozen=True)
class SuggestionSettings:
    """How candidates are scored and spread. ``min_distance`` in pixels of the map."""

    disagreement_weight: float = 1.0
    min_distance: float = 24.0
    candidates: int = 20_000
    """Pixels scored per image (a random sample: the score of every pixel is not needed)."""


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (largest - second largest) of ``probs`` (K, ...) class probabilities: (...) float32 in
    [0, 1], 1 where two classes tie."""
    if probs.shape[0] < 2:
        return np.zeros(probs.shape[1:], np.float32)
    top2 = -np.partition(-probs, 1, axis=0)[:2]
    return (1.0 - (top2[0] - top2[1])).astype(np.float32)


def candidate_scores(probs: np.ndarray, other: np.ndarray | None,
                     settings: SuggestionSettings = SuggestionSettings()) -> np.ndarray:
    """Score of every pixel: ``probs`` (K, ...) the map's probabilities (e.g. (K, H, W) or (K, N)
    sampled pixels), ``other`` of the same shape or None the second opinion's -> (...) float32,
    higher = more worth a click."""
    score = margin_uncertainty(probs)
    if other is not None:
        if other.shape != probs.shape:
            raise ValueError(f"second opinion {other.shape} and map {probs.shape} differ in shape")
        score = score + settings.disagreement_weight * (probs.argmax(0) != other.argmax(0))
    return score.astype(np.float32)


def spread_picks(rows: np.ndarray, cols: np.ndarray, groups: np.ndarray, order: np.ndarray,
                 count: int, min_distance: float, taken: np.ndarray) -> np.ndarray:
    """Indices into ``rows``/``cols`` (N,) of at most ``count`` picks: candidates visited in
    ``order`` (best first), one group (the map's class) after the other in turn, each pick at
    least ``min_distance`` from every other pick and from ``taken`` (M, 2) (row, col)."""
    queues = {int(g): deque(int(i) for i in order if groups[i] == g)
              for g in np.unique(groups[order])}
    placed = [tuple(p) for p in np.asarray(taken, np.float64).reshape(-1, 2)]
    picks: list[int] = []
    far2 = min_distance ** 2
    while len(picks) < count and any(queues.values()):
        for group in sorted(queues):
            queue = queues[group]
            while queue:
                i = queue.popleft()
                r, c = float(rows[i]), float(cols[i])
                if all((r - pr) ** 2 + (c - pc) ** 2 >= far2 for pr, pc in placed):
                    picks.append(i)
                    placed.append((r, c))
                    break
            if len(picks) == count:
                break
    return np.asarray(picks, np.int64)


def suggest_clicks(probs: np.ndarray, other: np.ndarray | None, clicks: Points, count: int,
                   rng: np.random.Generator, valid: np.ndarray | None = None,
                   settings: SuggestionSettings = SuggestionSettings()) -> np.ndarray:
    """The next ``count`` clicks on one image: (N, 3) int64 (row, col, class the map gives), N <=
    ``count``, best first within each class.

    ``probs`` (K, H, W) the current map's class probabilities, ``other`` (K, H, W) or None a
    second opinion, ``clicks`` (M, 3) the clicks made so far (row, col, class), ``valid`` (H, W)
    bool or None: pixels that may be suggested (data, not nodata)."""
    h, w = probs.shape[1:]
    allowed = np.ones((h, w), bool) if valid is None else valid.copy()
    allowed[clicks[:, 0], clicks[:, 1]] = False
    flat = np.flatnonzero(allowed)
    if flat.size == 0 or count < 1:
        return np.zeros((0, 3), np.int64)
    sample = rng.choice(flat, size=min(settings.candidates, flat.size), replace=False)
    rows, cols = np.divmod(sample, w)
    score = candidate_scores(probs[:, rows, cols], None if other is None else
                             other[:, rows, cols], settings)
    groups = probs[:, rows, cols].argmax(0)
    order = np.lexsort((rng.random(score.size), -score))  # best first, ties at random
    distance, picks = settings.min_distance, np.zeros(0, np.int64)
    while picks.size < count:  # a crowded image: relax the spacing rather than suggest less
        picks = spread_picks(rows, cols, groups, order, count, distance, clicks[:, :2])
        if distance < 1.0:
            break
        distance /= 2
    return np.stack([rows[picks], cols[picks], groups[picks]], axis=1).astype(np.int64)


def second_opinion(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A learner unlike the forest fitted on the same clicks: standardised features, multinomial
    logistic regression (scikit-learn). ``x`` (K, F) float32, ``y`` (K,) int64; the result has
    ``predict_proba`` and ``classes_``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000,
                                                               random_state=seed))
    model.fit(x, y)
    return model
