"""The class table: which id means which land-cover class, and its colour.

A table is JSON::

    {"name": "landcover.ai",
     "classes": [{"id": 0, "name": "background", "color": [214, 204, 163]}, ...],
     "ignore_colors": [[155, 155, 155]]}

Ids are 0..C-1 in order. ``color`` is RGB (0-255); it paints predictions and, for datasets with
colour-coded masks, is the mask colour of the class. ``ignore_colors`` are mask colours that
mean "no label" (mapped to :data:`IGNORE_INDEX`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IGNORE_INDEX = 255
"""Label value of an unlabelled pixel, everywhere in GeoSeg."""

DEFAULT_TABLE_PATH = Path(__file__).with_name("classes.json")


class ClassTableError(ValueError):
    """A class table that cannot be used (bad JSON, ids out of order, bad colour)."""


@dataclass(frozen=True)
class ClassTable:
    """Ordered land-cover classes with display / mask colours."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    name: str = "classes"
    _by_name: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise ClassTableError("a class table needs at least one class")
        if len(self.names) != len(self.colors):
            raise ClassTableError("names and colors differ in length")
        if len(self.names) >= IGNORE_INDEX:
            raise ClassTableError(f"at most {IGNORE_INDEX - 1} classes are supported")
        for c in (*self.colors, *self.ignore_colors):
            if len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c):
                raise ClassTableError(f"colour {list(c)} is not three integers in 0..255")
        object.__setattr__(self, "_by_name", {n.lower(): i for i, n in enumerate(self.names)})

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def class_id(self, value: str | int) -> int:
        """Resolve a class given as id (int or digit string) or name (case-insensitive).

        Raises KeyError naming the value when it is not in the table.
        """
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            idx = int(value)
            if 0 <= idx < self.num_classes:
                return idx
            raise KeyError(f"class id {idx} not in 0..{self.num_classes - 1}")
        key = str(value).strip().lower()
        if key in self._by_name:
            return self._by_name[key]
        raise KeyError(f"unknown class {value!r} (known: {', '.join(self.names)})")

    def palette(self) -> np.ndarray:
        """Colour lookup table, uint8 (256, 3): row k is class k's colour; others black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return lut

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Paint class ids: (H, W) integer ids -> (H, W, 3) uint8 RGB. 255 paints black."""
        return self.palette()[labels.astype(np.uint8)]

    def mask_from_colors(self, rgb: np.ndarray) -> np.ndarray:
        """Map a colour-coded mask (H, W, 3) uint8 to class ids (H, W) uint8.

        Class colours map to their ids, ignore colours to 255. Raises ClassTableError naming the
        first colour that is in neither list.
        """
        code = _pack_rgb(rgb)
        out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
        known = np.zeros(code.shape, dtype=bool)
        for idx, color in enumerate(self.colors):
            hit = code == _pack_rgb(np.asarray(color, dtype=np.uint8))
            out[hit] = idx
            known |= hit
        for color in self.ignore_colors:
            known |= code == _pack_rgb(np.asarray(color, dtype=np.uint8))
        if not known.all():
            y, x = np.argwhere(~known)[0]
            raise ClassTableError(
                f"mask colour {rgb[y, x].tolist()} at row {y}, column {x} is in neither the "
                f"classes nor the ignore colours of table {self.name!r}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": [
                {"id": i, "name": n, "color": list(c)}
                for i, (n, c) in enumerate(zip(self.names, self.colors))
            ],
            "ignore_colors": [list(c) for c in self.ignore_colors],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassTable:
        try:
            classes = sorted(data["classes"], key=lambda c: int(c["id"]))
            ids = [int(c["id"]) for c in classes]
            if ids != list(range(len(ids))):
                raise ClassTableError(f"class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
            return cls(
                names=tuple(str(c["name"]) for c in classes),
                colors=tuple(tuple(int(v) for v in c["color"]) for c in classes),  # type: ignore[misc]
                ignore_colors=tuple(tuple(int(v) for v in c) for c in data.get("ignore_colors", [])),  # type: ignore[misc]
                name=str(data.get("name", "classes")),
            )
        except (KeyError, TypeError) as exc:
            raise ClassTableError(f"malformed class table: missing or bad field {exc}") from exc

    @classmethod
    def load(cls, path: str | Path = DEFAULT_TABLE_PATH) -> ClassTable:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ClassTableError(f"{path}: not valid JSON ({exc})") from exc
        except ClassTableError as exc:
            raise ClassTableError(f"{path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) int32 code r<<16 | g<<8 | b."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
