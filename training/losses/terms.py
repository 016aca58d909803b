"""The training loss as one list of weighted terms.

A term is one class: a ``name``, a ``weight`` and ``value(logits, batch)``, its unweighted scalar
on one head's logits. A step's loss is::

    sum over heads h (out: 1, aux: AUX_WEIGHT when the model has it) of
        sum over the terms on every head: weight * value(logits_h)
    + sum over the terms on the main head only: weight * value(logits_out)

in list order. A term whose weight is 0 is skipped. Before each epoch ``start_epoch(epoch)``
lets a term set its weight (warm-ups, ramps); ``after_step()`` runs after every optimiser step;
``record()`` gives what the epoch's metrics record should show about the term.

The terms (:func:`loss_terms` builds the list from the run's options):

- :class:`ClickedPoints`: partial focal CE on the clicked points (weight 1, always);
- :class:`ExpandedLabels`: partial focal CE on the pixels labelled by expansion (superpixels or
  the forest, ``--expand``), weight ``--expand-weight``;
- :class:`GatedCRF`: the Gated CRF loss on all valid pixels, ``--crf-weight`` after
  ``--crf-warmup`` epochs;
- :class:`PseudoLabels`: partial focal CE against a mean teacher's confident labels
  (``--pseudo-labels``), main head only, weight ramped by the epoch.

Adding a term: write a subclass of :class:`LossTerm` and add one line to :func:`loss_terms`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from torch import Tensor

from model.class_table import IGNORE_INDEX
from training.labels.expansion import Targets, unpack_target
from training.labels.self_training import Teacher, pseudo_weight_for
from training.losses.focal import partial_focal_ce
from training.losses.weak import (
    CRF_DOWNSCALE,
    GATED_CRF_RADIUS,
    GATED_CRF_SIGMA_RGB,
    GATED_CRF_SIGMA_XY,
    downscale_for_crf,
    gated_crf_loss,
)

if TYPE_CHECKING:
    from training.config import TrainConfig

AUX_WEIGHT = 0.4
"""Weight of the auxiliary head's loss (``--aux-loss``), as in torchvision's DeepLabV3 recipe."""


@dataclass(frozen=True)
class Batch:
    """One training step's inputs: ``images`` float32 (N, 3, H, W) in [0, 1] (the model's
    input), ``packed`` the (N, H, W) targets as the dataset gives them (packed or plain sparse,
    see :mod:`training.labels.expansion`) and ``targets`` those split."""

    images: Tensor
    packed: Tensor
    targets: Targets

    @classmethod
    def of(cls, images: Tensor, packed: Tensor) -> Batch:
        return cls(images, packed, unpack_target(packed))


class LossTerm:
    """One weighted term of the training loss (see the module doc)."""

    name: ClassVar[str] = "term"
    every_head: ClassVar[bool] = True
    """False: the term is computed on the main head's logits only."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def value(self, logits: Tensor, batch: Batch) -> Tensor:
        """The unweighted term (a scalar) for ``logits`` (N, C, H, W)."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Set the weight for ``epoch`` (0-based); constant by default."""

    def after_step(self) -> None:
        """Runs after every optimiser step."""

    def record(self, mean: Callable[[float], float]) -> Optional[dict[str, Any]]:
        """What the epoch's metrics record shows about the term (None: nothing); ``mean``
        averages a number over the processes of a distributed run."""
        return None


class ClickedPoints(LossTerm):
    """Partial focal CE on the clicked points (or on dense masks, for the dense baseline)."""

    name = "clicked"

    def __init__(self, gamma: float, alpha: Optional[Tensor]) -> None:
        super().__init__(1.0)
        self.gamma, self.alpha = gamma, alpha

    def value(self, logits: Tensor, batch: Batch) -> Tensor:
        return partial_focal_ce(logits, batch.targets.clicked, self.gamma, self.alpha)


class ExpandedLabels(LossTerm):
    """Partial focal CE on the pixels labelled by expansion (a clicked pixel counts as clicked
    only), each term the mean over its own pixels: ``weight`` is that of an average expanded
    pixel relative to an average click."""

    name = "expanded"

    def __init__(self, weight: float, gamma: float, alpha: Optional[Tensor]) -> None:
        super().__init__(weight)
        self.gamma, self.alpha = gamma, alpha

    def value(self, logits: Tensor, batch: Batch) -> Tensor:
        clicked, expanded = batch.targets.clicked, batch.targets.expanded
        only_expanded = torch.where(clicked != IGNORE_INDEX,
                                    torch.full_like(expanded, IGNORE_INDEX), expanded)
        return partial_focal_ce(logits, only_expanded, self.gamma, self.alpha)


class GatedCRF(LossTerm):
    """The Gated CRF loss (:func:`training.losses.weak.gated_crf_loss`) on the softmax pooled by
    ``downscale``; weight 0 during the first ``warmup`` epochs."""

    name = "gated_crf"

    def __init__(self, weight: float, warmup: int, downscale: int = CRF_DOWNSCALE,
                 radius: int = GATED_CRF_RADIUS, sigma_xy: float = GATED_CRF_SIGMA_XY,
                 sigma_rgb: float = GATED_CRF_SIGMA_RGB) -> None:
        super().__init__(0.0 if warmup > 0 else weight)
        self.full_weight, self.warmup = weight, warmup
        self.downscale, self.radius, self.sigma_xy, self.sigma_rgb = downscale, radius, sigma_xy, sigma_rgb

    def start_epoch(self, epoch: int) -> None:
        self.weight = self.full_weight if epoch >= self.warmup else 0.0

    def value(self, logits: Tensor, batch: Batch) -> Tensor:
        probs, small, gate = downscale_for_crf(logits, batch.images, batch.targets.valid,
                                               self.downscale)
        return gated_crf_loss(probs, small, gate, self.radius, self.sigma_xy, self.sigma_rgb)


class PseudoLabels(LossTerm):
    """Partial focal CE against the ``teacher``'s labels of the pixels it is confident about
    (:meth:`training.labels.self_training.Teacher.pseudo_labels`); the teacher follows the
    network after every step. Weight by epoch: :func:`~training.labels.self_training.
    pseudo_weight_for`. Records the weight and the share of pixels labelled."""

    name = "pseudo_labels"
    every_head = False

    def __init__(self, teacher: Teacher, threshold: float, weight: float, start: float,
                 epochs: int, gamma: float, alpha: Optional[Tensor]) -> None:
        super().__init__(0.0)
        self.teacher, self.threshold = teacher, threshold
        self.full_weight, self.start, self.epochs = weight, start, epochs
        self.gamma, self.alpha = gamma, alpha
        self.labelled_share: list[Tensor] = []
        """Per step, the share of pixels pseudo-labelled (0-d tensors on the device: read after
        the epoch, so that no step waits for the device)."""

    def start_epoch(self, epoch: int) -> None:
        self.weight = pseudo_weight_for(self.full_weight, self.start, self.epochs, epoch)
        self.labelled_share = []

    def value(self, logits: Tensor, batch: Batch) -> Tensor:
        pseudo = self.teacher.pseudo_labels(batch.images, batch.packed, self.threshold)
        self.labelled_share.append((pseudo != IGNORE_INDEX).float().mean())
        return partial_focal_ce(logits, pseudo, self.gamma, self.alpha)

    def after_step(self) -> None:
        self.teacher.update()

    def record(self, mean: Callable[[float], float]) -> Optional[dict[str, Any]]:
        shares = self.labelled_share
        share = mean(float(torch.stack(shares).mean()) if shares else 0.0)
        return {"weight": self.weight, "labelled_share": round(share, 4)}


class TrainingLoss:
    """The weighted sum of ``terms`` over the model's heads (module doc)."""

    def __init__(self, terms: Sequence[LossTerm], aux_weight: float = AUX_WEIGHT) -> None:
        self.terms = list(terms)
        self.aux_weight = aux_weight

    def start_epoch(self, epoch: int) -> None:
        for term in self.terms:
            term.start_epoch(epoch)

    def after_step(self) -> None:
        for term in self.terms:
            term.after_step()

    def _head(self, logits: Tensor, batch: Batch, every_head: bool) -> Optional[Tensor]:
        total: Optional[Tensor] = None
        for term in self.terms:
            if term.weight == 0 or term.every_head != every_head:
                continue
            value = term.value(logits, batch)
            part = value if term.weight == 1.0 else term.weight * value
            total = part if total is None else total + part
        return total

    def __call__(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """The step's loss (a scalar) for the model's ``outputs`` ("out" and maybe "aux"
        logits, (N, C, H, W))."""
        loss = self._head(outputs["out"], batch, every_head=True)
        if loss is None:
            raise ValueError("the training loss has no term with a weight")
        if "aux" in outputs:
            aux = self._head(outputs["aux"], batch, every_head=True)
            if aux is not None:
                loss = loss + self.aux_weight * aux
        main_only = self._head(outputs["out"], batch, every_head=False)
        return loss if main_only is None else loss + main_only

    def records(self, mean: Callable[[float], float]) -> dict[str, dict[str, Any]]:
        """Each term's record for the epoch's metrics, by term name (terms without one left
        out); ``mean`` averages over the processes of a distributed run."""
        found = {term.name: term.record(mean) for term in self.terms}
        return {name: rec for name, rec in found.items() if rec is not None}


def loss_terms(config: TrainConfig, device: torch.device, teacher: Optional[Teacher] = None
               ) -> list[LossTerm]:
    """The terms of a run with ``config``'s options (``teacher``: the run's mean teacher when
    ``--pseudo-labels``); class weights (``--alpha``) on ``device``."""
    alpha = None if config.alpha is None else torch.as_tensor(config.alpha, dtype=torch.float32,
                                                              device=device)
    terms: list[LossTerm] = [ClickedPoints(config.gamma, alpha)]
    if config.expand != "none":
        terms.append(ExpandedLabels(config.expand_weight, config.gamma, alpha))
    if config.crf_weight > 0:
        terms.append(GatedCRF(config.crf_weight, config.crf_warmup))
    if teacher is not None:
        terms.append(PseudoLabels(teacher, config.pseudo_threshold, config.pseudo_weight,
                                  config.pseudo_start, config.epochs, config.gamma, alpha))
    return terms
