"""Self-training from a slowly updated copy of the network (``geoseg train --pseudo-labels``).

The teacher is an exponential moving average of the network being trained (the "mean teacher"
of Tarvainen & Valpola 2017): after every optimiser step each of its parameters moves a share
``1 - decay`` of the way to the student's, and its BatchNorm statistics are the student's. It
changes slowly, so its predictions are steadier than the student's. From ``--pseudo-start`` (a
share of the epochs, default the second half) on, the teacher labels every pixel it is confident
about (softmax maximum >= ``--pseudo-threshold``) that has no clicked label and is not crop
padding, and the student is also trained on those pseudo labels with the partial focal CE, weight
``--pseudo-weight``, ramped up linearly over the first half of that phase.

Cost per step: one forward pass of the teacher without gradient (about a third of a training
step) and one parameter update.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from model.class_table import IGNORE_INDEX
from training.labels.expansion import unpack_target

PSEUDO_THRESHOLD = 0.9
PSEUDO_WEIGHT = 1.0
PSEUDO_START = 0.5
TEACHER_DECAY = 0.99


class Teacher:
    """An exponential moving average of ``student`` (same architecture, no gradient, eval mode).

    ``update()`` after each optimiser step; ``pseudo_labels(images, targets, threshold)``."""

    def __init__(self, student: nn.Module, decay: float = TEACHER_DECAY) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"teacher decay must be in [0, 1), got {decay}")
        self.student = student
        self.decay = decay
        self.network = copy.deepcopy(student).eval()
        for p in self.network.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """teacher <- decay * teacher + (1 - decay) * student (parameters); buffers copied."""
        # one fused call per list rather than one kernel per tensor: this runs after every step
        torch._foreach_lerp_(list(self.network.parameters()),
                             [p.detach() for p in self.student.parameters()], 1.0 - self.decay)
        torch._foreach_copy_(list(self.network.buffers()), list(self.student.buffers()))

    @torch.no_grad()
    def pseudo_labels(self, images: Tensor, targets: Tensor, threshold: float) -> Tensor:
        """Teacher labels (N, H, W) int64 for ``images`` (N, 3, H, W): the teacher's class where
        its softmax maximum is >= ``threshold``, IGNORE_INDEX elsewhere and wherever ``targets``
        (N, H, W; packed or plain sparse) has a clicked label or marks crop padding."""
        logits = self.network(images)["out"].float()  # in eval mode since __init__
        confidence, label = logits.softmax(dim=1).max(dim=1)
        clicked, _, valid = unpack_target(targets)
        keep = (confidence >= threshold) & (clicked == IGNORE_INDEX) & valid[:, 0]
        return torch.where(keep, label, torch.full_like(label, IGNORE_INDEX))

    def state_dict(self) -> dict[str, Any]:
        return self.network.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state)


def pseudo_weight_for(weight: float, start_share: float, epochs: int, epoch: int) -> float:
    """The pseudo-label weight in ``epoch`` (0-based) of ``epochs``: 0 before the first
    ``ceil(start_share * epochs)`` epochs, then ``weight`` ramped up linearly over the first half
    of the remaining epochs (8 epochs, share 0.5: 0, 0, 0, 0, w/2, w, w, w)."""
    start = math.ceil(start_share * epochs)
    if epoch < start:
        return 0.0
    ramp = max(1, (epochs - start) // 2)
    return weight * min(1.0, (epoch - start + 1) / ramp)
