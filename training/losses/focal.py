"""Partial Focal Cross-Entropy (pfCE): focal loss over labelled pixels only.

    pfCE = sum(focal(pred, gt) * labelled) / (sum(labelled) + eps)
    focal = -alpha[gt] * (1 - p_gt) ** gamma * log(p_gt)

Pixels whose target is ``ignore_index`` (255) contribute nothing and get exactly zero gradient;
a batch with no labelled pixel gives 0. ``gamma=0`` without alpha is plain partial (masked) CE.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from model.class_table import IGNORE_INDEX


def partial_focal_ce(logits: Tensor, target: Tensor, gamma: float = 2.0,
                     alpha: Optional[Tensor] = None, ignore_index: int = IGNORE_INDEX,
                     eps: float = 1e-6) -> Tensor:
    """pfCE of ``logits`` (N, C, H, W) against integer ``target`` (N, H, W); a scalar.

    ``alpha``: optional (C,) per-class weights. Computed in float32 whatever the logits' dtype.
    """
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] \
            or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits (N, C, H, W) and target (N, H, W) disagree: "
                         f"{tuple(logits.shape)} vs {tuple(target.shape)}")
    labelled = target != ignore_index
    safe_target = torch.where(labelled, target, torch.zeros_like(target)).long()
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (N, H, W)
    loss = -log_pt
    if gamma != 0:
        pt = log_pt.exp()
        loss = loss * (1.0 - pt).clamp(min=0.0).pow(gamma)
    if alpha is not None:
        loss = loss * alpha.to(loss.device, loss.dtype)[safe_target]
    # where() (not a product) keeps unlabelled pixels out of the graph: their gradient is 0.
    loss = torch.where(labelled, loss, torch.zeros_like(loss))
    return loss.sum() / (labelled.sum().to(loss.dtype) + eps)
