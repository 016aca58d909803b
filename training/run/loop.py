"""The training loop: one epoch of optimiser steps over the crops, then validation."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.config import AMP_DTYPES, TrainConfig
from training.data.photometric import color_jitter
from training.data.sources import epoch_draws
from training.labels.expansion import ExpandedPointDataset
from training.labels.forest import ForestExpander
from training.labels.self_training import Teacher
from training.losses.terms import Batch, TrainingLoss, loss_terms
from training.points.options import Validation
from training.run.distributed import SINGLE, Group
from training.run.inputs import TrainingSet
from training.run.state import RunState

LOG = logging.getLogger(__name__)


def refresh_forest_labels(args: TrainConfig, dataset: Any, model: torch.nn.Module,
                          device: torch.device, epoch: int) -> None:
    """With ``--forest-refresh E``, before epoch E (1-based) and each one after: relabel the
    training images from the mean of the forest's and the network's probabilities."""
    expander = getattr(dataset, "expander", None)
    if not args.forest_refresh or epoch + 1 < args.forest_refresh or \
            not isinstance(expander, ForestExpander):
        return
    model.eval()

    def probabilities(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device).float().div_(255.0)
        with torch.inference_mode():
            return model(x)["out"][0].float().softmax(0).cpu().numpy()

    t0 = time.time()
    share = expander.refresh(probabilities)
    model.train()
    LOG.info(f"forest labels refreshed with the network: {100 * share:.1f}% of the pixels "
             f"({time.time() - t0:.0f} s)")


def training_loss(args: TrainConfig, device: torch.device, teacher: Teacher | None = None
                  ) -> TrainingLoss:
    """The run's loss: the terms its options ask for (:func:`training.losses.terms.loss_terms`)."""
    return TrainingLoss(loss_terms(args, device, teacher))


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, loss_of: TrainingLoss,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, device: torch.device, bar_title: str,
                    progress: bool, amp: torch.dtype | None = torch.float16,
                    jitter: float = 0.0) -> list[float]:
    """One pass over ``loader``: autocast to ``amp`` (None: off) and channels_last on CUDA;
    ``loss_of`` weighs its terms over the model's heads and hears of every step; the network
    sees the images colour-jittered by ``jitter`` (``training.data.photometric``), the loss
    terms as read. Returns the loss of each step."""
    cuda = device.type == "cuda"
    model.train()
    losses: list[float] = []
    bar = tqdm(loader, desc=bar_title, unit="step", disable=not progress, leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, amp or torch.float32, enabled=cuda and amp is not None):
            loss = loss_of(model(color_jitter(images, jitter)), Batch.of(images, labels))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_of.after_step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def run_epoch(epoch: int, args: TrainConfig, state: RunState, dataset: TrainingSet,
              loss_of: TrainingLoss, steps: int, validate: Validation,
              device: torch.device, out: Path, group: Group = SINGLE) -> dict[str, Any]:
    """Train one epoch of ``steps`` optimizer steps, then validate (and write the validation
    pictures). Returns the epoch's record for the metrics.

    In a distributed ``group`` each process trains on its share of the epoch's draws; the
    record (loss averaged over the processes, validation as ``validate`` combines it) is the
    same on every process; rank 0 alone draws pictures."""
    t0 = time.time()
    cuda = device.type == "cuda"
    progress = not args.no_progress and group.is_main
    refresh_forest_labels(args, dataset, state.model, device, epoch)
    dataset.set_epoch(epoch)
    group.seed_epoch(args.seed, epoch)
    loss_of.start_epoch(epoch)
    draws = epoch_draws(len(dataset), steps * args.batch_size * group.world_size, args.seed, epoch)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=group.share(draws),
                        num_workers=args.num_workers, pin_memory=cuda)
    losses = train_one_epoch(state.training_network(), loader, loss_of, state.optimizer,
                             state.scheduler, state.scaler, device, f"epoch {epoch + 1}/{args.epochs}",
                             progress, AMP_DTYPES[args.amp], args.color_jitter)
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
    record |= loss_of.records(group.mean)
    return record | {"epoch": epoch, "step": (epoch + 1) * steps,
            "train_loss": group.mean(float(np.mean(losses)) if losses else 0.0)} | found | {
            "lr": state.scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2),
            "train_seconds": round(train_seconds, 2)}

