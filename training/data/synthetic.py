"""Synthetic aerial land-cover scenes, deterministic from a seed.

Each scene is an RGB image (H, W, 3) uint8 and a dense mask (H, W) uint8 with LandCover.ai's
codes: 0 background (fields and bare soil), 1 building (rotated roofs with shadows),
2 woodland (textured tree crowns), 3 water (smooth dark bodies), 4 road (asphalt lines).

Written to disk in LandCover.ai's tiled layout (``output/<stem>.jpg``, ``output/<stem>_m.png``,
``train.txt`` / ``val.txt`` / ``test.txt``), or, with ``--layout folders``, as colour-coded
masks (``images/``, ``masks/``, ``classes.json``).

    python -m training.data.synthetic --out data/synthetic --train 48 --val 12 --test 12 --size 256
    python -m training.data.synthetic --scene demo_out/scene.png --size 1280x768 --seed 2030
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from common.cli import at_least, blocked_path, fail, parser, refuse_overwrite
from model.class_table import ClassTable

BACKGROUND, BUILDING, WOODLAND, WATER, ROAD = (
    ClassTable.load().names.index(name)
    for name in ("background", "building", "woodland", "water", "road"))
"""The synthetic scenes' class ids, looked up by name in the default table (model/classes.json)."""
UNIT = 256
"""Feature sizes are fixed in pixels (a fixed ground resolution, as in real orthophotos): a
scene of side ``UNIT`` holds one neighbourhood; larger scenes hold proportionally more objects."""


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth random field (H, W) float32 in about [-1, 1], features about ``cell`` pixels wide."""
    coarse = rng.uniform(-1, 1, size=(h // cell + 3, w // cell + 3)).astype(np.float32)
    big = Image.fromarray(coarse, mode="F").resize(((w // cell + 3) * cell, (h // cell + 3) * cell),
                                                   Image.Resampling.BICUBIC)
    return np.asarray(big)[cell:cell + h, cell:cell + w]


def _paint(rgb: np.ndarray, where: np.ndarray, base: tuple[float, float, float],
           shade: np.ndarray) -> None:
    """Set ``rgb`` at ``where`` to colour ``base`` modulated by ``shade`` (H, W) in ~[-1, 1]."""
    color = np.asarray(base, dtype=np.float32)[None, None, :] * (1.0 + 0.18 * shade[..., None])
    rgb[where] = color[where]


def generate_scene(size: int | tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (RGB (H, W, 3) uint8, mask (H, W) uint8). ``size`` is side or (H, W).

    Layers are painted in order, each over the ones before: fields, woodland, water, roads,
    buildings; then sensor noise. They draw from one random generator in this order, so a seed
    always gives the same pixels.
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    area = h * w / UNIT ** 2  # how many UNIT x UNIT neighbourhoods the scene holds
    rgb = np.zeros((h, w, 3), dtype=np.float32)
    mask = np.full((h, w), BACKGROUND, dtype=np.uint8)
    grain = _paint_fields(rng, rgb)
    _add_woodland(rng, rgb, mask, grain)
    _add_water(rng, rgb, mask, area)
    road_points = _add_roads(rng, rgb, mask, grain, area)
    _add_buildings(rng, rgb, mask, grain, area, road_points)
    rgb += rng.normal(0, 3.0, size=rgb.shape).astype(np.float32)  # sensor noise
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def _paint_fields(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Background: agricultural patches of differing tone over fine soil grain.

    Fills ``rgb`` (H, W, 3); returns the grain (H, W), which later layers reuse as texture."""
    h, w = rgb.shape[:2]
    patches = _smooth_noise(rng, h, w, max(8, UNIT // 3))
    grain = rng.normal(0, 0.35, size=(h, w)).astype(np.float32)
    soil = np.where(patches[..., None] > 0, np.array([150, 140, 95], np.float32),
                    np.array([120, 135, 80], np.float32))
    rgb[:] = soil * (1 + 0.10 * _smooth_noise(rng, h, w, 6)[..., None] + 0.05 * grain[..., None])
    return grain


def _add_woodland(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray,
                  grain: np.ndarray) -> None:
    """Woodland: blobs of thresholded noise, with a crown texture."""
    h, w = mask.shape
    wood = _smooth_noise(rng, h, w, max(8, UNIT // 4)) > rng.uniform(0.25, 0.6)
    crowns = _smooth_noise(rng, h, w, 3) + 0.4 * grain
    _paint(rgb, wood, (45, 85, 40), crowns * 1.6)
    mask[wood] = WOODLAND


def _add_water(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, area: float) -> None:
    """Water: zero to two smooth bodies per neighbourhood."""
    h, w = mask.shape
    u = UNIT
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(round(int(rng.integers(0, 3)) * area)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.08, 0.25) * u, rng.uniform(0.08, 0.25) * u
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radius = rng.uniform(0.7, 1.0, 12)
        draw.polygon([(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a))
                      for a, r in zip(angles, radius)], fill=255)
    water = np.asarray(layer.filter(ImageFilter.GaussianBlur(2))) > 127
    _paint(rgb, water, (35, 70, 95), 0.6 * _smooth_noise(rng, h, w, 16))
    mask[water] = WATER


def _add_roads(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, grain: np.ndarray,
               area: float) -> list[tuple[float, float]]:
    """Roads: one to three polylines crossing the scene (more in larger scenes).

    Returns the polylines' points, near which buildings are placed."""
    h, w = mask.shape
    u = UNIT
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    road_points: list[tuple[float, float]] = []
    for _ in range(max(1, round(int(rng.integers(1, 4)) * np.sqrt(area)))):
        start = (rng.uniform(0, w), -10.0) if rng.random() < 0.5 else (-10.0, rng.uniform(0, h))
        end = (rng.uniform(0, w), h + 10.0) if start[1] < 0 else (w + 10.0, rng.uniform(0, h))
        mid = ((start[0] + end[0]) / 2 + rng.normal(0, w / 8), (start[1] + end[1]) / 2 + rng.normal(0, h / 8))
        line = [start, mid, end]
        draw.line(line, fill=255, width=int(rng.integers(max(3, u // 80), max(5, u // 35))),
                  joint="curve")
        road_points.extend(line)
    road = np.asarray(layer) > 0
    _paint(rgb, road, (105, 105, 108), 0.3 * grain)
    mask[road] = ROAD
    return road_points


ROOF_COLOURS = [(170, 70, 55), (150, 150, 150), (210, 205, 195), (120, 90, 80)]


def _building_footprint(rng: np.random.Generator, anchor: tuple[float, float], h: int, w: int
                        ) -> tuple[list[tuple[float, float]], float]:
    """One rotated rectangular roof placed near ``anchor`` (x, y): its four corners, and how
    far (pixels) its shadow falls to the south-east."""
    u = UNIT
    ax, ay = anchor
    t = rng.uniform(0, 1)
    cx = np.clip(ax + rng.normal(0, u / 5) * t, 0, w)
    cy = np.clip(ay + rng.normal(0, u / 5) * t, 0, h)
    bw, bh = rng.uniform(0.03, 0.09) * u, rng.uniform(0.03, 0.07) * u
    theta = rng.uniform(0, np.pi)
    c, s = np.cos(theta), np.sin(theta)
    corners = [(cx + c * dx - s * dy, cy + s * dx + c * dy)
               for dx, dy in ((-bw, -bh), (bw, -bh), (bw, bh), (-bw, bh))]
    return corners, max(2.0, 0.15 * min(bw, bh))


def _add_buildings(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray,
                   grain: np.ndarray, area: float, road_points: list[tuple[float, float]]) -> None:
    """Buildings: rotated rectangles near the roads, each with a shadow to the south-east."""
    h, w = mask.shape
    layer = Image.new("L", (w, h), 0)
    shadow = Image.new("L", (w, h), 0)
    draw, shadow_draw = ImageDraw.Draw(layer), ImageDraw.Draw(shadow)
    roof_index = np.zeros((h, w), dtype=np.int32)
    for k in range(round(int(rng.integers(3, 12)) * area)):
        anchor = road_points[rng.integers(len(road_points))] if road_points else (w / 2, h / 2)
        corners, off = _building_footprint(rng, anchor, h, w)
        shadow_draw.polygon([(x + off, y + off) for x, y in corners], fill=255)
        draw.polygon(corners, fill=255)
        single = Image.new("L", (w, h), 0)
        ImageDraw.Draw(single).polygon(corners, fill=255)
        roof_index[np.asarray(single) > 0] = k % len(ROOF_COLOURS) + 1
    building = np.asarray(layer) > 0
    shade = np.asarray(shadow) > 0
    rgb[shade & ~building] *= 0.55
    for k, color in enumerate(ROOF_COLOURS, start=1):
        _paint(rgb, building & (roof_index == k), color, 0.25 * grain)
    mask[building] = BUILDING


def write_dataset(root: str | Path, n_train: int, n_val: int, n_test: int, size: int = 256,
                  seed: int = 0, layout: str = "landcoverai", progress: bool = True) -> Path:
    """Write scenes to ``root`` in ``layout`` (``landcoverai`` or ``folders``); returns root."""
    root = Path(root)
    splits = {"train": n_train, "val": n_val, "test": n_test}
    table = ClassTable.load()
    if layout == "landcoverai":
        (root / "output").mkdir(parents=True, exist_ok=True)
    elif layout == "folders":
        root.mkdir(parents=True, exist_ok=True)
        table.save(root / "classes.json")
    else:
        raise ValueError(f"unknown layout {layout!r} (landcoverai or folders)")
    total = sum(splits.values())
    bar = tqdm(total=total, desc="synthetic scenes", disable=not progress, unit="scene")
    index = 0
    for split, count in splits.items():
        stems = []
        for _ in range(count):
            stem = f"scene_{index:04d}"
            rgb, mask = generate_scene(size, seed * 100_003 + index)
            if layout == "landcoverai":
                Image.fromarray(rgb).save(root / "output" / f"{stem}.jpg", quality=95)
                Image.fromarray(mask).save(root / "output" / f"{stem}_m.png")
            else:
                folder = root / split
                (folder / "images").mkdir(parents=True, exist_ok=True)
                (folder / "masks").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(folder / "images" / f"{stem}.png")
                Image.fromarray(table.colorize(mask)).save(folder / "masks" / f"{stem}.png")
            stems.append(stem)
            index += 1
            bar.update()
        if layout == "landcoverai":
            (root / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    bar.close()
    return root


def write_scene(path: str | Path, height: int, width: int, seed: int) -> tuple[Path, Path]:
    """One scene as ``path`` (RGB PNG) and ``<stem>_mask.png`` (class ids); returns both."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb, mask = generate_scene((height, width), seed)
    mask_path = path.with_name(f"{path.stem}_mask.png")
    Image.fromarray(rgb).save(path)
    Image.fromarray(mask).save(mask_path)
    return path, mask_path


def scene_size(text: str) -> tuple[int, int]:
    """argparse type for ``--size``: ``256`` or ``WIDTHxHEIGHT`` -> (height, width), each side
    at least 8 pixels."""
    w, _, h = text.lower().partition("x")
    try:
        height, width = int(h or w), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N or WIDTHxHEIGHT, got {text!r}") from None
    if min(height, width) < 8:
        raise argparse.ArgumentTypeError(f"sides must be at least 8 pixels, got {text!r}")
    return height, width


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("geoseg synthetic", __doc__)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="folder to write a dataset into")
    target.add_argument("--scene", type=Path,
                        help="write one scene to this PNG (and its mask beside it)")
    p.add_argument("--train", type=at_least(0), default=48, help="training scenes")
    p.add_argument("--val", type=at_least(0), default=12, help="validation scenes")
    p.add_argument("--test", type=at_least(0), default=12, help="test scenes")
    p.add_argument("--size", type=scene_size, default="256",
                   help="scene side, or WIDTHxHEIGHT (--scene only), in pixels")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (each dataset scene derives its own from it)")
    p.add_argument("--layout", choices=("landcoverai", "folders"), default="landcoverai",
                   help="LandCover.ai tiles (output/ + split lists) or colour-mask folders")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder, or replace --scene and its mask")
    args = p.parse_args(argv)
    if args.out is not None and args.size[0] != args.size[1]:
        p.error("dataset scenes are square: give --size N")
    return args


def target_problem(args: argparse.Namespace) -> str | None:
    """Why the scene or dataset must not be written where the options say, or None."""
    blocked = blocked_path(args.scene if args.scene is not None else args.out)
    if blocked:
        return blocked
    if args.scene is not None:
        if args.scene.is_dir():
            return f"--scene {args.scene} is a folder; give the PNG file to write"
        for path in (args.scene, args.scene.with_name(f"{args.scene.stem}_mask.png")):
            refusal = refuse_overwrite(path, args.overwrite)
            if refusal:
                return refusal
        return None
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} is a file, not a folder"
    if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
        return f"{args.out} is not empty; pass --overwrite to write the dataset into it"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = target_problem(args)
    if problem:
        return fail(problem)
    height, width = args.size
    try:
        if args.scene:
            image, mask = write_scene(args.scene, height, width, args.seed)
            print(f"wrote {image} and {mask}")
            return 0
        root = write_dataset(args.out, args.train, args.val, args.test, height, args.seed,
                             args.layout)
    except OSError as exc:  # e.g. a parent path that is a file, a read-only folder
        return fail(f"cannot write {exc.filename or ''}: {exc.strerror or exc}")
    print(f"wrote {args.train + args.val + args.test} scenes to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
