"""What a training run holds and keeps between invocations: the network, its optimiser, LR
schedule and scaler (:class:`RunState`), checkpoints and ``--resume``."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.artifact import BAND_SCALING, FOREST_SAMPLES
from model.builder import build_model
from model.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from model.class_table import ClassTable
from training.config import TrainConfig
from training.labels.self_training import Teacher
from training.run.distributed import SINGLE, Group

LOG = logging.getLogger(__name__)


@dataclass
class RunState:
    """What a checkpoint keeps and ``--resume`` restores: the network, its optimiser state and
    the epochs done (``start_epoch`` is the next one to train). ``trainer``: the network that
    training steps go through when it is not ``model`` itself (its DDP wrapper)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    start_epoch: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    trainer: torch.nn.Module | None = None
    teacher: Teacher | None = None

    def training_network(self) -> torch.nn.Module:
        """What the optimizer steps train through: the DDP wrapper, or ``model``."""
        return self.model if self.trainer is None else self.trainer

    def add(self, record: dict[str, Any]) -> bool:
        """Append an epoch's record to the history; returns whether its mIoU is a new best."""
        self.history.append(record)
        improved = record["val_miou"] > self.best_miou
        self.best_miou = max(self.best_miou, record["val_miou"])
        return improved

    def best_record(self) -> dict[str, Any]:
        """The epoch record with the best validation mIoU so far ({} before the first epoch)."""
        return max(self.history, key=lambda r: r["val_miou"], default={})


def poly_schedule(total_steps: int, power: float = 0.9):
    """LR factor (1 - step / total) ** power, floored at 0."""
    return lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power


def build_optimizer(args: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), args.lr, momentum=0.9,
                               weight_decay=args.weight_decay)
    return torch.optim.AdamW(model.parameters(), args.lr, weight_decay=args.weight_decay)


def new_run_state(args: TrainConfig, table: ClassTable, device: torch.device,
                  total_steps: int, group: Group = SINGLE) -> RunState:
    """A freshly initialised network (seeded by ``--seed``: the same in every process),
    optimiser, LR schedule, scaler. ``--sync-bn`` in a distributed run: SyncBatchNorm layers
    (same parameters and state dict keys as BatchNorm)."""
    torch.manual_seed(args.seed)
    model = build_model(args.arch, table.num_classes, args.pretrained, args.aux_loss).to(device)
    if group.active and args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(args, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and args.amp == "fp16")
    teacher = Teacher(model, args.teacher_decay) if args.pseudo_labels else None
    return RunState(model, optimizer, scheduler, scaler, teacher=teacher)


def resume(state: RunState, path: Path, args: TrainConfig, table: ClassTable) -> None:
    """Load the checkpoint ``path`` into ``state``, the torch RNG included, so that the run goes
    on exactly as if it had not stopped. Raises CheckpointError when the options disagree."""
    ckpt = read_checkpoint(path)
    config = ckpt.get("config", {})
    saved = {"--arch": ckpt.get("arch"), "--aux-loss": ckpt.get("aux_loss"),
             "--optimizer": config.get("optimizer", args.optimizer)}
    asked = {"--arch": args.arch, "--aux-loss": args.aux_loss, "--optimizer": args.optimizer}
    for flag, value in saved.items():
        if value != asked[flag]:
            raise CheckpointError(f"{path} was trained with {flag} {value}, not {asked[flag]}; "
                                  f"resume with the run's options or pass --overwrite")
    if ClassTable.from_dict(ckpt["classes"]) != table:
        raise CheckpointError(f"{path} was trained with another class table; resume with "
                              f"the run's --classes or pass --overwrite")
    try:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        state.scaler.load_state_dict(ckpt["scaler"])
        if state.teacher is not None:
            state.teacher.load_state_dict(ckpt["teacher"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        state.start_epoch, state.best_miou = ckpt["epoch"] + 1, ckpt["best_miou"]
        state.history = ckpt["history"]
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot resume from it ({str(exc).splitlines()[0]})") from exc


def resume_if_possible(state: RunState, path: Path, args: TrainConfig, table: ClassTable
                       ) -> bool:
    """``--resume``: continue from ``path`` when it exists, saying after which epoch. Returns
    False when that run already finished all ``--epochs`` (it says so): nothing left to train."""
    if not path.is_file():
        LOG.info(f"no {path} to resume: starting a new run")
        return True
    resume(state, path, args, table)
    if state.start_epoch >= args.epochs:
        LOG.info(f"{path}: the run already finished all {state.start_epoch} epochs; nothing to train "
              f"(raise --epochs to train longer)")
        return False
    LOG.info(f"resumed from {path} after epoch {state.start_epoch}/{args.epochs}")
    return True


def checkpoint_payload(args: TrainConfig, table: ClassTable, config: dict[str, Any],
                       state: RunState, epoch: int,
                       forest_samples: bytes | None = None) -> dict[str, Any]:
    """Everything ``last.pt`` / ``best.pt`` hold after ``epoch``: the network (for export),
    the optimiser, schedule, scaler and torch RNG (for --resume), the history and options, and
    what the forest of forest labels was fitted on (``ForestSamples.to_bytes``, for the map of
    network and forest)."""
    return {"arch": args.arch, "aux_loss": args.aux_loss, "classes": table.to_dict(),
            "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict(),
            "epoch": epoch, "best_miou": state.best_miou, "history": state.history,
            "crop_size": args.crop_size, "config": config,
            BAND_SCALING: config.get(BAND_SCALING),
            "rng": {"torch": torch.get_rng_state()},
            "teacher": state.teacher.state_dict() if state.teacher is not None else None,
            FOREST_SAMPLES: forest_samples}


def save_checkpoints(out: Path, payload: dict[str, Any], improved: bool) -> None:
    """``last.pt`` every epoch; ``best.pt`` too when the validation mIoU ``improved``."""
    save_checkpoint(out / "last.pt", payload)
    if improved:
        save_checkpoint(out / "best.pt", payload)

