"""Seams of ``geoseg predict`` on a mosaic of real photographs, for several ways of tiling.

    python -m benchmarks.seams --checkpoint runs/dubai/best.pt --data DUBAI_DIR \\
        --classes training/tables/dubai-aerial.json --val-dirs tile5 tile6 --scale 0.5

The validation photos (and their dense masks) are laid side by side into one georeferenced
mosaic (rows of ``--columns`` photos, 8 transparent pixels between them). Each variant exports
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
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rasterio
import torch
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
from training.data import ColourMaskFolders
from training.metrics import confusion_matrix, scores

VARIANTS = {
    # name: (image pooling window in training crops, None: the whole tile; blend, tile, overlap)
    "centre": (None, "centre", 512, 64),
    "centre, overlap 128": (None, "centre", 512, 128),
    "taper": (None, "taper", 512, 64),
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


def build_mosaic(source: ColourMaskFolders, columns: int, folder: Path) -> tuple[Path, np.ndarray]:
    """Write the photos of ``source`` as one RGBA GeoTIFF (rows of ``columns`` photos,
    :data:`GAP` transparent pixels between them); returns its path and the (H, W) uint8 mask
    mosaic (255: no label or gap)."""
    samples = [source.load(i) for i in range(len(source))]
    rows = [samples[i:i + columns] for i in range(0, len(samples), columns)]
    heights = [max(s.image.shape[0] for s in row) + GAP for row in rows]
    width = max(sum(s.image.shape[1] + GAP for s in row) for row in rows)
    image = np.zeros((sum(heights), width, 4), np.uint8)
    mask = np.full((sum(heights), width), 255, np.uint8)
    y = 0
    for row, h in zip(rows, heights):
        x = 0
        for s in row:
            sh, sw = s.image.shape[:2]
            image[y:y + sh, x:x + sw, :3] = s.image
            image[y:y + sh, x:x + sw, 3] = 255
            mask[y:y + sh, x:x + sw] = s.mask
            x += sw + GAP
        y += h
    path = folder / "mosaic.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=image.shape[0], count=4,
                       dtype="uint8", crs="EPSG:32640", photometric="RGB",
                       transform=from_origin(500000.0, 2800000.0, 0.5, 0.5)) as dst:
        dst.write(np.moveaxis(image, -1, 0))
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    return path, mask


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


def run_variant(model: Path, mosaic: Path, mask: np.ndarray, table: ClassTable, blend: str,
                tile: int, overlap: int, folder: Path) -> dict[str, Any]:
    """Map the mosaic with one model and tiling; seam index, mIoU and tiles/s."""
    config = handler_config(blend, tile, overlap)
    segmenter = LocalSegmenter(model, "cpu", config)
    out = folder / f"map-{blend}-{tile}-{overlap}.tif"
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
            "scene_tiles_per_second": scene_tiles / result.seconds}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="dubai-aerial folder")
    p.add_argument("--classes", type=Path, default=Path("training/tables/dubai-aerial.json"))
    p.add_argument("--val-dirs", nargs="+", default=["tile5", "tile6"])
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--columns", type=int, default=6, help="photos per mosaic row")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/seams-cpu.json"))
    args = p.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    table = ClassTable.load(args.classes)
    ckpt = read_checkpoint(args.checkpoint)
    crop = int(ckpt.get("crop_size") or 256)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mosaic, mask = build_mosaic(ColourMaskFolders(args.data, table, args.val_dirs, args.scale),
                                    args.columns, folder)
        truth = {name: seam_index(mask, tile, overlap).as_dict()
                 for name, (_, _, tile, overlap) in VARIANTS.items()}
        exported: dict[Optional[int], Path] = {}
        for name in args.variants:
            window, blend, tile, overlap = VARIANTS[name]
            px = window * crop if window else None
            if px not in exported:
                exported[px] = folder / f"model-{px}.pt"
                export_variant(args.checkpoint, px, exported[px])
            rows[name] = {"pooling_window_px": px, "blend": blend, "tile": tile,
                          "overlap": overlap, "truth_seams": truth[name],
                          **run_variant(exported[px], mosaic, mask, table, blend, tile, overlap,
                                        folder)}
            r = rows[name]
            print(f"{name}: seam index {r['seams']['columns']:.2f} / {r['seams']['rows']:.2f}, "
                  f"strip {r['seams']['strip_columns']:.2f} / {r['seams']['strip_rows']:.2f}, "
                  f"mIoU {100 * r['miou']:.2f}, {r['tiles_per_second']:.2f} tiles/s",
                  file=sys.stderr, flush=True)
        shape = list(mask.shape)
    record = {"machine": platform.node() and platform.machine(), "threads": torch.get_num_threads(),
              "checkpoint": args.checkpoint.name, "epoch": ckpt.get("epoch"),
              "train_crop": crop, "mosaic": {"dirs": args.val_dirs, "scale": args.scale,
                                             "shape": shape, "columns": args.columns},
              "variants": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("| tiling | seam index (cols / rows) | strip ratio (cols / rows) | mIoU % "
          "| scene tiles/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        s = r["seams"]
        print(f"| {name} | {s['columns']:.2f} / {s['rows']:.2f} | {s['strip_columns']:.2f} / "
              f"{s['strip_rows']:.2f} | {100 * r['miou']:.2f} | "
              f"{r['scene_tiles_per_second']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
