"""The class table: which id means which land-cover class, and its colour.

A table is JSON::

    {"name": "landcover.ai",
     "classes": [{"id": 0, "name": "background", "color": [214, 204, 163]}, ...],
     "ignore_colors": [[155, 155, 155]]}

Ids are 0..C-1 in order. ``color`` is RGB (0-255): the display colour that paints predictions,
pictures, legends and colour tables. A class may add ``mask_color``, the colour that codes it in
a dataset's colour-coded masks (read by :meth:`ClassTable.mask_from_colors`); without it the
display colour is also the mask colour (tables written before ``mask_color`` existed).
``ignore_colors`` are mask colours that mean "no label" (mapped to :data:`IGNORE_INDEX`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

IGNORE_INDEX = 255
"""Label value of an unlabelled pixel, everywhere in GeoSeg."""

DEFAULT_TABLE_PATH = Path(__file__).with_name("classes.json")


class ClassTableError(ValueError):
    """A class table that cannot be used (bad JSON, ids out of order, bad colour)."""


@dataclass(frozen=True)
class ClassTable:
    """Ordered land-cover classes with display colours (``colors``) and the colours that code
    them in colour-coded masks (``mask_colors``; None: the display colours)."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    name: str = "classes"
    mask_colors: Optional[tuple[tuple[int, int, int], ...]] = None
    _by_name: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise ClassTableError("a class table needs at least one class")
        if len(self.names) != len(self.colors):
            raise ClassTableError("names and colors differ in length")
        if self.mask_colors is None:
            object.__setattr__(self, "mask_colors", self.colors)
        elif len(self.mask_colors) != len(self.names):
            raise ClassTableError("names and mask colors differ in length")
        if len(self.names) >= IGNORE_INDEX:
            raise ClassTableError(f"at most {IGNORE_INDEX - 1} classes are supported")
        for c in (*self.colors, *self.mask_codes, *self.ignore_colors):
            if len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c):
                raise ClassTableError(f"colour {list(c)} is not three integers in 0..255")
        object.__setattr__(self, "_by_name", {n.lower(): i for i, n in enumerate(self.names)})

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def mask_codes(self) -> tuple[tuple[int, int, int], ...]:
        """The colour of each class in colour-coded masks (its display colour unless the table
        gives a ``mask_color``)."""
        return self.mask_colors if self.mask_colors is not None else self.colors

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

    def palette(self, colors: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
        """Colour lookup table, uint8 (256, 3): row k is class k's colour (``colors``, default
        the display colours); others black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors if colors is None else colors,
                                             dtype=np.uint8)
        return lut

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Paint class ids: (H, W) integer ids -> (H, W, 3) uint8 RGB. 255 paints black."""
        return self.palette()[labels.astype(np.uint8)]

    def mask_from_colors(self, rgb: np.ndarray) -> np.ndarray:
        """Map a colour-coded mask (H, W, 3) uint8 to class ids (H, W) uint8.

        Mask colours (:attr:`mask_codes`) map to their ids, ignore colours to 255. Raises ClassTableError naming the
        first colour that is in neither list.
        """
        code = _pack_rgb(rgb)
        out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
        known = np.zeros(code.shape, dtype=bool)
        for idx, color in enumerate(self.mask_codes):
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

    def colorize_mask(self, labels: np.ndarray) -> np.ndarray:
        """Paint class ids in the mask colours (the inverse of :meth:`mask_from_colors`):
        (H, W) ids -> (H, W, 3) uint8; 255 paints the first ignore colour (black without one)."""
        lut = self.palette(self.mask_codes)
        if self.ignore_colors:
            lut[IGNORE_INDEX] = self.ignore_colors[0]
        return lut[labels.astype(np.uint8)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``mask_color`` only for classes whose mask colour differs from their
        display colour (so a table without one round-trips unchanged)."""
        classes: list[dict[str, Any]] = []
        for i, (n, c, m) in enumerate(zip(self.names, self.colors, self.mask_codes)):
            entry: dict[str, Any] = {"id": i, "name": n, "color": list(c)}
            if tuple(m) != tuple(c):
                entry["mask_color"] = list(m)
            classes.append(entry)
        return {"name": self.name, "classes": classes,
                "ignore_colors": [list(c) for c in self.ignore_colors]}

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
                mask_colors=tuple(tuple(int(v) for v in c.get("mask_color", c["color"]))  # type: ignore[misc]
                                  for c in classes),
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
