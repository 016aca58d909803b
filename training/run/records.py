"""What a run writes and prints about itself: the options and data facts of ``metrics.json``,
the per-epoch records (``metrics.json`` / ``metrics.csv``) and the one-line epoch log."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.class_table import ClassTable
from training.config import TrainConfig
from training.run.distributed import SINGLE, Group

LOG = logging.getLogger(__name__)


def run_config(args: TrainConfig, device: torch.device, data: dict[str, Any], steps: int,
               table: ClassTable, group: Group = SINGLE) -> dict[str, Any]:
    """The options and what they resolved to, as plain JSON values (for metrics.json);
    ``data``: what the data options resolved to (image counts, point counts...)."""
    options = {k: str(v) if isinstance(v, Path) else
               [str(x) for x in v] if isinstance(v, list) else v for k, v in vars(args).items()}
    options["amp"] = args.amp if device.type == "cuda" else "off"  # the CPU trains in fp32
    if args.images is not None:  # rasters + a point layer: no dataset layout
        options["dataset"] = None
    return options | data | {"device": str(device), "steps_per_epoch": steps,
                      "classes": list(table.names), "processes": group.world_size,
                      "backend": group.backend,
                      "global_batch_size": args.batch_size * group.world_size}


def write_metrics(out: Path, config: dict[str, Any], history: list[dict[str, Any]],
                  with_forest: dict[str, Any] | None = None) -> None:
    """``metrics.json`` (config + one record per epoch, and ``with_forest``: the validation of
    the final network's map with its forest, for a run with forest labels) and a flat
    ``metrics.csv``."""
    record: dict[str, Any] = {"config": config, "epochs": history}
    if with_forest is not None:
        record["final_with_forest"] = with_forest
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            | {f"iou_{n}": v for n, v in r["val_iou"].items()}
            | {f"dense_iou_{n}": v for n, v in r.get("val_dense_iou", {}).items()} for r in history]
    if rows:
        with (out / "metrics.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def log_with_forest(with_forest: dict[str, Any], final: dict[str, Any]) -> None:
    """The final map's line: network and forest together against the network alone."""
    LOG.info(f"final map, network and forest together: mIoU {100 * with_forest['val_miou']:.2f}% "
             f"(the network alone {100 * final['val_miou']:.2f}%)")


def log_epoch(record: dict[str, Any], epochs: int) -> None:
    if "val_points" in record:
        val = (f"val points: mIoU {100 * record['val_miou']:.2f}%  "
               f"acc {100 * record['val_pixel_accuracy']:.2f}% ({record['val_points']} points)")
        if "val_dense_miou" in record:
            val += f"  dense mIoU {100 * record['val_dense_miou']:.2f}%"
    else:
        val = (f"val mIoU {100 * record['val_miou']:.2f}%  "
               f"acc {100 * record['val_pixel_accuracy']:.2f}%")
    LOG.info(f"epoch {record['epoch'] + 1}/{epochs}  loss {record['train_loss']:.4f}  {val}  "
          f"({record['seconds']:.0f} s)")


def single_class_warning(record: dict[str, Any], table: ClassTable) -> str | None:
    """A warning when the validation predictions of ``record`` (its ``val_confusion``, rows true,
    columns predicted) all fall in one class, else None."""
    confusion = np.asarray(record.get("val_confusion") or [], dtype=np.int64)
    if confusion.ndim != 2 or not confusion.sum():
        return None
    predicted = np.flatnonzero(confusion.sum(axis=0))
    if len(predicted) != 1:
        return None
    return (f"the model predicts one class ({table.names[int(predicted[0])]}) for every "
            f"validation {'point' if 'val_points' in record else 'pixel'}: it has not learned "
            f"the others yet; train longer (--epochs, --steps-per-epoch), check the points of "
            f"each class, or try another --lr")

