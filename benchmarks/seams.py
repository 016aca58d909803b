"""Seams of ``geoseg predict`` on a mosaic of real photographs, for several ways of tiling.

    python -m benchmarks.seams --checkpoint runs/dubai/best.pt --data DUBAI_DIR \\
        --classes training/tables/dubai-aerial.json --val-dirs tile5 tile6 --scale 0.5

The photos of ``--dirs`` (all six folders: the more lines, the steadier the index) and their
dense masks are laid side by side into one georeferenced mosaic (rows of ``--columns`` photos,
8 transparent pixels between them; the mIoU is taken on the ``--val-dirs`` photos, held out from
training), once for each of
``--offsets`` (transparent rows and columns before the photos, which move the tile grid over
them: the lines' own rates vary a lot on real photos, so one grid position is noisy, and the
scores are averaged over the positions). Each variant exports
the checkpoint (image pooling over the whole tile, or over a fixed window), maps the mosaic with
``scene.run.map_scene`` as ``geoseg predict`` does, and records the seam index
(``scene.seams``), the mIoU against the masks and the segmenting phase's speed: tiles run per
second, and the scene's own tiles per second (the blend's windows also run their neighbour's
last tile, so a user waits for scene tiles, not tiles run). The
masks' own seam index says what a map with no seams scores on these lines.
Results: ``--out`` (JSON) and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from common.allocator import keep_freed_memory
from handler.inference import HandlerConfig
from handler.tiling import plan_tiles
from model.checkpoint import model_from_checkpoint, read_checkpoint
from model.class_table import ClassTable
from model.export import export_model
from model.pooling import use_window_pooling
from scene.run import LocalSegmenter, SceneJob, map_scene
from scene.seams import seam_index
from training.data.sources import ColourMaskFolders
from training.run.metrics import confusion_matrix, scores
from training.run.pictures import save_picture, titled_panels, with_legend

VARIANTS = {
    # name: (image pooling window in training crops, None: the whole tile; blend, tile, overlap)
    "centre": (None, "centre", 512, 64),
    "centre, overlap 128": (None, "centre", 512, 128),
    "taper": (None, "taper", 512, 64),
    "taper, overlap 96": (None, "taper", 512, 96),
    "taper, overlap 128": (None, "taper", 512, 128),
    "window pooling (crop), centre": (1, "centre", 512, 64),
    "window pooling (crop), taper": (1, "taper", 512, 64),
    "window pooling (2 x crop), centre": (2, "centre", 512, 64),
    "window pooling (2 x crop), taper": (2, "taper", 512, 64),
    "window pooling (crop), taper, overlap 128": (1, "taper", 512, 128),
}


GAP = 8
"""Transparent pixels between neighbouring photos of the mosaic: a photo's border is no edge of
the map (pairs with no data are not counted), wherever it falls on the tile grid."""


def build_mosaic(source: ColourMaskFolders, columns: int, folder: Path, offset: int = 0,
                 scored_dirs: Sequence[str] = ()) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write the photos of ``source`` as one RGBA GeoTIFF (rows of ``columns`` photos,
    :data:`GAP` transparent pixels between them, ``offset`` transparent rows and columns before
    them, which moves the tile grid over the photos); returns its path, the (H, W) uint8 mask
    mosaic (255: no label or gap) and the same with only the photos of ``scored_dirs``
    labelled (those the mIoU is taken on)."""
    samples = [source.load(i) for i in range(len(source))]
    rows = [samples[i:i + columns] for i in range(0, len(samples), columns)]
    heights = [max(s.image.shape[0] for s in row) + GAP for row in rows]
    width = offset + max(sum(s.image.shape[1] + GAP for s in row) for row in rows)
    image = np.zeros((offset + sum(heights), width, 4), np.uint8)
    mask = np.full(image.shape[:2], 255, np.uint8)
    scored = mask.copy()
    y = offset
    for row, h in zip(rows, heights):
        x = offset
        for s in row:
            sh, sw = s.image.shape[:2]
            image[y:y + sh, x:x + sw, :3] = s.image
            image[y:y + sh, x:x + sw, 3] = 255
            mask[y:y + sh, x:x + sw] = s.mask
            if s.key.split("/")[0] in scored_dirs:
                scored[y:y + sh, x:x + sw] = s.mask
            x += sw + GAP
        y += h
    path = folder / f"mosaic-{offset}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=image.shape[0], count=4,
                       dtype="uint8", crs="EPSG:32640", photometric="RGB", alpha="YES",
                       transform=from_origin(500000.0, 2800000.0, 0.5, 0.5)) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return path, mask, scored


def coloured(classes: np.ndarray, table: ClassTable) -> np.ndarray:
    """(H, W) uint8 class ids -> (H, W, 3) uint8 in the class colours, no data black."""
    colours = np.zeros((256, 3), np.uint8)
    colours[:table.num_classes] = np.array(table.colors, np.uint8)
    return colours[classes]


def export_variant(checkpoint: Path, window: Optional[int], out: Path) -> None:
    """Export ``checkpoint`` to ``out``, with its image pooling over ``window`` px if given."""
    ckpt = read_checkpoint(checkpoint)
    model, table = model_from_checkpoint(ckpt, checkpoint)
    if window is not None:
        use_window_pooling(model, window)
    export_model(model.eval(), table, ckpt["arch"], out)


def handler_config(blend: str, tile: int, overlap: int) -> HandlerConfig:
    """The handler's defaults with this tiling (a tree without ``tile_blend`` gets centre)."""
    config = HandlerConfig(tile_size=tile, tile_overlap=overlap)
    if "tile_blend" in {f.name for f in dataclasses.fields(HandlerConfig)}:
        config = dataclasses.replace(config, tile_blend=blend)
    return config


FIGURE_CROP = (slice(200, 1100), slice(400, 1700))
"""The part of the mosaic (at offset 0) that ``--figure`` shows: rows, columns."""


def comparison_figure(maps: dict[str, np.ndarray], table: ClassTable) -> np.ndarray:
    """The :data:`FIGURE_CROP` of each coloured map (H, W, 3) uint8 side by side, titled with
    its variant's name, shrunk to 2/3, above the class legend."""
    rows, cols = FIGURE_CROP
    panels = [np.asarray(Image.fromarray(np.ascontiguousarray(m[rows, cols])).resize(
        ((cols.stop - cols.start) * 2 // 3, (rows.stop - rows.start) * 2 // 3),
        Image.Resampling.NEAREST)) for m in maps.values()]
    return with_legend(titled_panels(panels, list(maps)), table)


def run_variant(model: Path, mosaic: Path, mask: np.ndarray, table: ClassTable, blend: str,
                tile: int, overlap: int, folder: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Map the mosaic with one model and tiling: (seam index, mIoU against ``mask`` and
    tiles/s; the (H, W) uint8 class map)."""
    config = handler_config(blend, tile, overlap)
    segmenter = LocalSegmenter(model, "cpu", config)
    out = folder / f"map-{mosaic.stem}-{blend}-{tile}-{overlap}.tif"
    result = map_scene(SceneJob(mosaic, out), segmenter, config, tiles_per_window=4,
                       show_progress=False)
    with rasterio.open(out) as src:
        classes = src.read(1)
    found = scores(confusion_matrix(classes, mask, table.num_classes))
    scene_tiles = len(plan_tiles(classes.shape[0], classes.shape[1], tile, overlap))
    return {"seams": seam_index(classes, tile, overlap).as_dict(), "miou": found.miou,
            "pixel_accuracy": found.pixel_accuracy, "tiles": result.tiles,
            "scene_tiles": scene_tiles, "seconds": result.seconds,
            "tiles_per_second": result.tiles / result.seconds,
            "scene_tiles_per_second": scene_tiles / result.seconds}, classes


def mean_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over the offsets' runs of every score (nested seam reports included)."""
    def mean(key: str, sub: Optional[str] = None) -> float:
        values = [r[key][sub] if sub else r[key] for r in runs]
        return float(np.mean(values))
    out: dict[str, Any] = {k: mean(k) for k in ("miou", "pixel_accuracy", "seconds",
                                                 "tiles_per_second", "scene_tiles_per_second")}
    out["tiles"] = int(sum(r["tiles"] for r in runs))
    out["scene_tiles"] = int(sum(r["scene_tiles"] for r in runs))
    for key in ("seams", "truth_seams"):
        out[key] = {sub: mean(key, sub) for sub in runs[0][key]}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="dubai-aerial folder")
    p.add_argument("--classes", type=Path, default=Path("training/tables/dubai-aerial.json"))
    p.add_argument("--dirs", nargs="+", default=[f"tile{k}" for k in range(1, 7)],
                   help="folders whose photos make the mosaic (the seams are measured on all)")
    p.add_argument("--val-dirs", nargs="+", default=["tile5", "tile6"],
                   help="folders whose photos the mIoU is taken on (held out from training)")
    p.add_argument("--pictures", type=Path, default=None,
                   help="folder for each variant's class map of the first offset (PNG)")
    p.add_argument("--figure", type=Path, default=None,
                   help="a picture of the same part of every variant's map, side by side "
                        "(docs/seams.png: --variants centre 'taper, overlap 96')")
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--columns", type=int, default=6, help="photos per mosaic row")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--offsets", type=int, nargs="+", default=[0, 112, 224, 336],
                   help="transparent pixels before the photos: each moves the tile grid over "
                        "them, and the scores are averaged over the offsets")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/seams-cpu.json"))
    args = p.parse_args(argv)
    keep_freed_memory()
    table = ClassTable.load(args.classes)
    ckpt = read_checkpoint(args.checkpoint)
    crop = int(ckpt.get("crop_size") or 256)
    rows: dict[str, Any] = {}
    source = ColourMaskFolders(args.data, table, args.dirs, args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mosaics = {offset: build_mosaic(source, args.columns, folder, offset, args.val_dirs)
                   for offset in args.offsets}
        exported: dict[Optional[int], Path] = {}
        first_maps: dict[str, np.ndarray] = {}
        for name in args.variants:
            window, blend, tile, overlap = VARIANTS[name]
            px = window * crop if window else None
            if px not in exported:
                exported[px] = folder / f"model-{px}.pt"
                export_variant(args.checkpoint, px, exported[px])
            runs = {}
            for offset, (path, mask, scored) in mosaics.items():
                found, classes = run_variant(exported[px], path, scored, table, blend, tile,
                                             overlap, folder)
                runs[offset] = {"truth_seams": seam_index(mask, tile, overlap).as_dict(), **found}
                if offset == args.offsets[0]:
                    first_maps[name] = coloured(classes, table)
            if args.pictures is not None:
                save_picture(args.pictures / f"{name.replace(' ', '-').replace(',', '')}.png",
                             with_legend(first_maps[name], table))
            rows[name] = {"pooling_window_px": px, "blend": blend, "tile": tile,
                          "overlap": overlap, **mean_of_runs(list(runs.values())),
                          "by_offset": runs}
            r = rows[name]
            print(f"{name}: seam index {r['seams']['columns']:.2f} / {r['seams']['rows']:.2f} "
                  f"(mask {r['truth_seams']['columns']:.2f} / {r['truth_seams']['rows']:.2f}), "
                  f"mIoU {100 * r['miou']:.2f}, {r['scene_tiles_per_second']:.2f} scene tiles/s",
                  file=sys.stderr, flush=True)
        shape = list(mosaics[args.offsets[0]][1].shape)
    if args.figure is not None:
        save_picture(args.figure, comparison_figure(first_maps, table))
    record = {"machine": platform.machine(), "threads": torch.get_num_threads(),
              "checkpoint": args.checkpoint.name, "epoch": ckpt.get("epoch"),
              "train_crop": crop, "mosaic": {"dirs": args.dirs, "scored_dirs": args.val_dirs,
                                             "scale": args.scale,
                                             "shape": shape, "columns": args.columns,
                                             "offsets": args.offsets, "gap": GAP},
              "variants": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("| tiling | seam index (cols / rows) | the mask's | worst line (cols / rows) "
          "| mIoU % | scene tiles/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        s, t = r["seams"], r["truth_seams"]
        print(f"| {name} | {s['columns']:.2f} / {s['rows']:.2f} | {t['columns']:.2f} / "
              f"{t['rows']:.2f} | {s['worst_columns']:.2f} / {s['worst_rows']:.2f} | "
              f"{100 * r['miou']:.2f} | {r['scene_tiles_per_second']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
