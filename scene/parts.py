"""Finished windows kept on disk until the scene is assembled, so that ``--resume`` continues
an interrupted run where it stopped.

Each window's kept class map (uint8 ids, 255 = no data) is one compressed ``.npz`` in the work
folder ``<output>.parts/``, written to a temporary name and renamed (a killed run leaves no half
part). ``run.json`` there records what the parts were made from (input, model, tiling); a resume
with anything else is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from scene.source import SceneError

RUN_FILE = "run.json"


class PartStore:
    """The parts of one output: ``<output>.parts/<index>.npz``."""

    def __init__(self, output: str | Path) -> None:
        output = Path(output)
        self.folder = output.with_name(output.name + ".parts")

    def start(self, fingerprint: dict[str, Any], resume: bool) -> int:
        """Prepare the folder; returns how many parts a resume keeps. Without ``resume`` old
        parts are discarded; with it, a different ``fingerprint`` is refused."""
        run_file = self.folder / RUN_FILE
        if resume and run_file.exists():
            recorded = json.loads(run_file.read_text())
            if recorded != fingerprint:
                changed = sorted(k for k in set(recorded) | set(fingerprint)
                                 if recorded.get(k) != fingerprint.get(k))
                raise SceneError(f"cannot resume {self.folder}: it was made with other "
                                 f"{', '.join(changed)}; run without --resume to start over")
            return len(self.done())
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        run_file.write_text(json.dumps(fingerprint, indent=1))
        return 0

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.npz"

    def done(self) -> set[int]:
        """Indices of the windows already on disk."""
        return {int(p.stem) for p in self.folder.glob("*.npz") if p.stem.isdigit()}

    def save(self, index: int, classes: np.ndarray) -> None:
        """Store window ``index``'s (h, w) uint8 class map atomically."""
        tmp = self.folder / f"{index:06d}.tmp.npz"
        np.savez_compressed(tmp, classes=classes)
        os.replace(tmp, self.path(index))

    def load(self, index: int) -> np.ndarray:
        with np.load(self.path(index)) as data:
            return data["classes"]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
