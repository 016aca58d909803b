"""Segmentation metrics over a confusion matrix; pixels labelled 255 are ignored."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.class_table import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                     num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class.

    ``pred`` and ``target`` hold class ids of the same shape; target pixels equal to
    ``ignore_index`` are left out.
    """
    pred_t = torch.as_tensor(pred).reshape(-1).long()
    target_t = torch.as_tensor(target).reshape(-1).long()
    if pred_t.shape != target_t.shape:
        raise ValueError(f"prediction and target sizes differ: {pred_t.numel()} vs {target_t.numel()}")
    keep = target_t != ignore_index
    pred_t, target_t = pred_t[keep], target_t[keep]
    if target_t.numel() and (target_t.max() >= num_classes or target_t.min() < 0):
        raise ValueError(f"target holds a class id outside 0..{num_classes - 1}")
    counts = torch.bincount(target_t * num_classes + pred_t.clamp(0, num_classes - 1),
                            minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one confusion matrix. ``iou`` is NaN for a class absent from truth and prediction."""

    iou: np.ndarray  # (C,) float
    miou: float
    pixel_accuracy: float

    def as_dict(self, names: tuple[str, ...] | list[str]) -> dict[str, float | dict[str, float | None]]:
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, self.iou)},
        }


def scores(cm: np.ndarray) -> SegmentationScores:
    """Per-class IoU = TP / (TP + FP + FN), mIoU over classes present, pixel accuracy."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return SegmentationScores(iou=iou, miou=miou,
                              pixel_accuracy=float(tp.sum() / total) if total else float("nan"))
