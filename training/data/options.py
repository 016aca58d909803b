"""Command-line options that choose a dataset, shared by ``train`` and ``evaluate``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import existing_file, positive
from model.class_table import DEFAULT_TABLE_PATH, ClassTable
from training.data.sources import (
    ColourMaskFolders,
    DatasetError,
    LandCoverAIOrthophotos,
    LandCoverAITiles,
    SampleSource,
)

if TYPE_CHECKING:
    from training.config import TrainConfig


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The dataset options; ``required=False`` where another source can stand in for --data."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, default=None,
                       help="dataset folder (LandCover.ai root, or folders of images/ + masks/)")
    group.add_argument("--dataset", choices=("landcoverai", "folders"), default="landcoverai",
                       help="layout: LandCover.ai (output/ tiles or images/+masks/ orthophotos), "
                            "or colour-coded mask folders with their own class table")
    group.add_argument("--classes", type=existing_file, default=None,
                       help="class table JSON (default: <data>/classes.json for folders if "
                            "present, else model/classes.json)")
    group.add_argument("--train-dirs", nargs="*", default=None,
                       help="folders sub-directories for training (default: train/)")
    group.add_argument("--val-dirs", nargs="*", default=None,
                       help="folders sub-directories for validation (default: val/)")
    group.add_argument("--scale", type=positive(float), default=1.0,
                       help="resize factor for folder images and masks (e.g. 0.5 on a CPU)")


def _data_root(args: argparse.Namespace | TrainConfig) -> Path:
    if args.data is None:
        raise DatasetError("give --data (a dataset folder)")
    return Path(args.data)


def load_table(args: argparse.Namespace | TrainConfig) -> ClassTable:
    """``--classes``, else the dataset's own ``classes.json`` (folders), else the default table."""
    if args.classes:
        return ClassTable.load(args.classes)
    own = _data_root(args) / "classes.json"
    if args.dataset == "folders" and own.is_file():
        return ClassTable.load(own)
    return ClassTable.load(DEFAULT_TABLE_PATH)


def open_source(args: argparse.Namespace | TrainConfig, split: str, table: ClassTable) -> SampleSource:
    """The images and dense masks of ``split`` (train, val or test) as the options describe."""
    root = _data_root(args)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if args.dataset == "folders":
        chosen = args.train_dirs if split == "train" else args.val_dirs
        if not chosen and not (root / split).is_dir() and split != "train":
            raise DatasetError(f"{root} has no {split}/ folder: name the {split} folders with "
                               f"--{split}-dirs (validating on the training images measures nothing)"
                               if split == "val" else f"{root} has no {split}/ folder")
        dirs = chosen if chosen else ([split] if (root / split).is_dir() else [])
        return ColourMaskFolders(root, table, dirs, args.scale)
    if (root / "output").is_dir():
        return LandCoverAITiles(root, split, table.num_classes)
    if (root / "images").is_dir():
        return LandCoverAIOrthophotos(root, split)
    raise DatasetError(f"{root}: neither LandCover.ai output/ tiles nor images/ + masks/")
