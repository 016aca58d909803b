"""The training loop: one epoch of optimiser steps over the crops, then validation."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.config import AMP_DTYPES, TrainConfig
from training.data.sources import epoch_draws
from training.labels.expansion import ExpandedPointDataset
from training.labels.self_training import SelfTraining, pseudo_weight_for
from training.losses.focal import PartialFocalCELoss
from training.losses.weak import WeakSupervisionLoss
from training.points.options import Validation
from training.run.distributed import SINGLE, Group
from training.run.inputs import TrainingSet
from training.run.state import RunState

AUX_WEIGHT = 0.4
"""Weight of the auxiliary head's loss (``--aux-loss``), as in torchvision's DeepLabV3 recipe."""

Criterion = Union[PartialFocalCELoss, WeakSupervisionLoss]
"""The training loss: pfCE on labelled pixels, or with the terms on unlabelled ones."""


def training_criterion(args: TrainConfig, device: torch.device) -> Criterion:
    """pfCE on the clicked points, or, for a weakly supervised run, :class:`WeakSupervisionLoss`
    (its Gated CRF weight is set per epoch by :meth:`TrainConfig.crf_weight_for`)."""
    if not args.weakly_supervised:
        return PartialFocalCELoss(args.gamma, args.alpha).to(device)
    return WeakSupervisionLoss(args.gamma, args.alpha, expand_weight=args.expand_weight,
                               crf_weight=args.crf_weight).to(device)



def train_one_epoch(model: torch.nn.Module, loader: DataLoader, criterion: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, device: torch.device, bar_title: str,
                    progress: bool, self_training: SelfTraining | None = None,
                    amp: torch.dtype | None = torch.float16) -> list[float]:
    """One pass over ``loader``: autocast to ``amp`` (None: off) and channels_last on CUDA, the
    aux head weighted by AUX_WEIGHT when present; ``self_training``: its pseudo-label term is
    added (when its weight is not 0) and its teacher updated after every step. Returns the loss
    of each step."""
    cuda = device.type == "cuda"
    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=bar_title, unit="step", disable=not progress, leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        extra = (images,) if isinstance(criterion, WeakSupervisionLoss) else ()
        with torch.autocast(device.type, amp or torch.float32, enabled=cuda and amp is not None):
            outputs = model(images)
            loss = criterion(outputs["out"], labels, *extra)
            if "aux" in outputs:
                loss = loss + AUX_WEIGHT * criterion(outputs["aux"], labels, *extra)
            if self_training is not None and self_training.weight > 0:
                loss = loss + self_training.loss(images, labels, outputs["out"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if self_training is not None:
            self_training.after_step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def run_epoch(epoch: int, args: TrainConfig, state: RunState, dataset: TrainingSet,
              criterion: Criterion, steps: int, validate: Validation,
              device: torch.device, out: Path, group: Group = SINGLE) -> dict[str, Any]:
    """Train one epoch of ``steps`` optimizer steps, then validate (and write the validation
    pictures). Returns the epoch's record for the metrics.

    In a distributed ``group`` each process trains on its share of the epoch's draws; the
    record (loss averaged over the processes, validation as ``validate`` combines it) is the
    same on every process; rank 0 alone draws pictures."""
    t0 = time.time()
    cuda = device.type == "cuda"
    progress = not args.no_progress and group.is_main
    dataset.set_epoch(epoch)
    group.seed_epoch(args.seed, epoch)
    if isinstance(criterion, WeakSupervisionLoss):
        criterion.crf_weight = args.crf_weight_for(epoch)
    draws = epoch_draws(len(dataset), steps * args.batch_size * group.world_size, args.seed, epoch)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=group.share(draws),
                        num_workers=args.num_workers, pin_memory=cuda)
    self_training = None if state.teacher is None else SelfTraining(
        state.teacher, args.pseudo_threshold,
        pseudo_weight_for(args.pseudo_weight, args.pseudo_start, args.epochs, epoch), args.gamma,
        criterion.alpha)  # the class weights of the main loss, on the device already
    losses = train_one_epoch(state.training_network(), loader, criterion, state.optimizer,
                             state.scheduler, state.scaler, device, f"epoch {epoch + 1}/{args.epochs}",
                             progress, self_training, AMP_DTYPES[args.amp])
    train_seconds = time.time() - t0
    state.model.eval()
    group.sync_state(state.model)  # every process scores exactly the weights rank 0 saves
    found = validate(state.model, device, progress, out / "pictures" if group.is_main else None,
                     args.max_pictures if group.is_main else 0)
    record: dict[str, Any] = {}
    if isinstance(dataset, ExpandedPointDataset):
        stats = dataset.cache.stats
        record["superpixels"] = {"computed": stats.computed, "cache_hits": stats.hits,
                                 "seconds_per_image": round(stats.seconds_per_image(), 3)}
    if self_training is not None:
        shares = self_training.labelled_share
        record["pseudo_labels"] = {"weight": self_training.weight, "labelled_share": round(
            group.mean(float(torch.stack(shares).mean()) if shares else 0.0), 4)}
    return record | {"epoch": epoch, "step": (epoch + 1) * steps,
            "train_loss": group.mean(float(np.mean(losses)) if losses else 0.0)} | found | {
            "lr": state.scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2),
            "train_seconds": round(train_seconds, 2)}

