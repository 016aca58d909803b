"""Map whole scenes of any size to a Cloud Optimized GeoTIFF of classes, with optional
polygons, statistics and a preview.

    geoseg predict orthophoto.tif landcover.tif --vector landcover.gpkg --stats landcover.json
    geoseg predict tiles/ maps/ --stats 'maps/{stem}.json'          # a folder (or several files)
    geoseg predict big.tif big-classes.tif --server http://10.0.0.5:8080 --server http://10.0.0.6:8080

The raster is read in windows of whole tiles (never whole), tiled like the server (edges
reflected), and the result equals the server's answer for the whole image. With several
inputs, OUTPUT is a folder (``<stem>.tif`` each) and --vector / --stats / --preview need a
``{stem}`` in their path. An interrupted run continues with --resume (which leaves finished
outputs as they are); its kept parts are not discarded without --overwrite.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from common.allocator import keep_freed_memory
from common.cli import at_least, fail, parser, positive, refuse_overwrite
from handler.inference import HandlerConfig
from handler.tiling import BLENDS
from scene.parts import PartStore
from scene.source import SceneError, cap_gdal_cache, list_rasters, open_raster, reading_note

if TYPE_CHECKING:  # scene.run (torch) is imported when a run starts
    from scene.run import SceneResult

DEFAULT_MODEL = Path("model/geoseg.pt")
SUMMARY = re.compile(r": (\d+) tiles in ([\d.]+) s \([\d.]+ tiles/s(?:, (\d+) ms of CPU per tile)?\)$")
"""The last line ``geoseg predict`` writes per scene (stderr), as :func:`summary_line` makes it:
groups tiles, seconds segmenting, ms of CPU per tile (absent when no tile was segmented)."""


def build_parser():
    defaults = HandlerConfig()
    p = parser("geoseg predict", __doc__)
    p.add_argument("paths", nargs="+", metavar="INPUT ... OUTPUT",
                   help="rasters or folders of rasters, then the output COG (a folder for several)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported model (local mode)")
    p.add_argument("--server", action="append", default=[], metavar="URL",
                   help="TorchServe to send windows to instead of a local model (repeatable)")
    p.add_argument("--concurrency", type=at_least(1), default=2,
                   help="windows in flight at once with --server")
    p.add_argument("--shared-dir", type=Path, metavar="FOLDER",
                   help="with --server on this machine: send windows and get their class ids "
                        "through files in FOLDER, the servers' handler shared_dir, instead of "
                        "HTTP bodies (docs/serving.md)")
    p.add_argument("--token-file", type=Path,
                   help="TorchServe's key_file.json, or a file holding the inference key alone "
                        "(default: key_file.json of the current folder, if any)")
    p.add_argument("--device", default=None, help="local mode: cpu or cuda (default: cuda if present)")
    p.add_argument("--no-forest", action="store_true",
                   help="local mode: map with the network alone, also with a model that carries "
                        "its forest (trained with forest labels: by default network and forest "
                        "map together; a server maps with the network alone)")
    p.add_argument("--tile", type=at_least(16), default=defaults.tile_size,
                   help="tile side in pixels (must match the server's with --server)")
    p.add_argument("--overlap", type=at_least(0), default=defaults.tile_overlap,
                   help="tile overlap in pixels (must match the server's with --server)")
    p.add_argument("--blend", choices=BLENDS, default=defaults.tile_blend,
                   help="join tiles by blending their class probabilities across the overlap "
                        "(taper: no seams) or by splitting it in the middle (centre: cheaper, "
                        "seams where tiles disagree); must match the server's with --server")
    p.add_argument("--tile-batch", type=at_least(0), default=defaults.tile_batch_size,
                   help="tiles per forward pass, 0 for the device's default (local mode)")
    p.add_argument("--tiles-per-window", type=at_least(1), default=4,
                   help="a window (one read, one request) is N x N tiles")
    p.add_argument("--vector", help="polygons per class: .gpkg, .geojson (EPSG:4326) or .shp")
    p.add_argument("--min-area", type=positive(float), default=None, metavar="M2",
                   help="with --vector: merge regions smaller than this many m^2 into their neighbours")
    p.add_argument("--stats", help="per-class pixels, fraction and area as JSON")
    p.add_argument("--preview", help="the input with the classes blended over it, .png or .jpg, "
                                     "at most 2048 pixels across")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (a finished output is left as it is)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def plan_jobs(inputs: list[Path], output: Path, vector: Optional[str], stats: Optional[str],
              preview: Optional[str]):
    """One SceneJob per input (see the module docstring for the naming rule)."""
    from scene.run import SceneJob

    several = len(inputs) > 1
    if several and output.suffix.lower() in (".tif", ".tiff"):
        raise SceneError(f"{len(inputs)} inputs need a folder as OUTPUT, not {output}")
    for name, value in (("--vector", vector), ("--stats", stats), ("--preview", preview)):
        if several and value and "{stem}" not in value:
            raise SceneError(f"with several inputs {name} needs '{{stem}}' in its path")

    def named(value: Optional[str], stem: str) -> Optional[Path]:
        return Path(value.replace("{stem}", stem)) if value else None

    return [SceneJob(p, output / f"{p.stem}.tif" if several else output,
                     named(vector, p.stem), named(stats, p.stem), named(preview, p.stem))
            for p in inputs]


def check_inputs(jobs, vector: Optional[str], min_area: Optional[float]) -> list[str]:
    """Refuse, before anything is segmented, an input that cannot give the requested outputs:
    ``--vector`` needs a CRS (areas in m²) and a known format, ``--min-area`` a projected CRS.
    Returns the notes to print once every check has passed (inputs without a CRS)."""
    from handler.decode import pixel_area_m2
    from scene.vectors import driver_for

    if vector:
        try:
            driver_for(Path(vector))
        except ValueError as exc:
            raise SceneError(f"--vector {exc}") from None
    notes = []
    for job in jobs:
        dataset = open_raster(job.input)
        try:
            crs, transform = dataset.crs, dataset.transform
        finally:
            dataset.close()
        if crs is None:
            notes.append(f"note: {job.input} has no CRS: its map is in pixel coordinates, "
                         "with no place on Earth or area in m²")
        if job.vector and crs is None:
            raise SceneError(f"{job.input} has no CRS, so --vector cannot give its polygons "
                             "a place or an area; georeference it or drop --vector")
        if job.vector and min_area and pixel_area_m2(crs, transform) is None:
            raise SceneError(f"{job.input}: --min-area needs a projected CRS (e.g. UTM), the "
                             f"raster's is {crs.to_string()}; reproject it or drop --min-area")
    return notes


def check_outputs(jobs, overwrite: bool, resume: bool) -> list:
    """The jobs to run. Without ``overwrite``: kept parts of an interrupted run need
    ``resume``; an existing output is refused, except that ``resume`` skips (with a note) a
    job whose outputs all exist and which has no kept parts (it finished)."""
    todo = []
    for job in jobs:
        outputs = [p for p in (job.output, job.vector, job.stats, job.preview) if p]
        parts = PartStore(job.output).folder
        if overwrite:
            todo.append(job)
        elif parts.exists():
            if not resume:
                raise SceneError(f"{parts} holds the parts of an interrupted run; pass --resume "
                                 "to continue it or --overwrite to start again")
            todo.append(job)
        elif resume and all(p.exists() for p in outputs):
            print(f"{job.output} exists and is complete: nothing to resume "
                  "(pass --overwrite to make it again)", file=sys.stderr)
        else:
            for path in outputs:
                problem = refuse_overwrite(path, False)
                if problem:
                    raise SceneError(problem)
            todo.append(job)
    return todo


def reading_notes(jobs, segmenter, server: bool) -> list[str]:
    """How each input that is not 8-bit RGB is read (:func:`scene.source.reading_note`)."""
    if segmenter.scaling is not None:
        scaling = "the model's band statistics"
    elif server:
        scaling = ("the served model's band statistics (each window's own 2-98 % stretch if it "
                   "has none)")
    else:
        scaling = "one 2-98 % stretch per band over the whole scene (the model has no band statistics)"
    notes = []
    for job in jobs:
        dataset = open_raster(job.input)
        try:
            note = reading_note(str(job.input), np.dtype(dataset.dtypes[0]), dataset.count, scaling)
        finally:
            dataset.close()
        if note:
            notes.append(note)
    return notes


def make_segmenter(args, config: HandlerConfig):
    if args.shared_dir is not None and not args.server:
        raise SceneError("--shared-dir is for --server: a local model reads no shared folder")
    if args.server:
        from scene.remote import ServerSegmenter, read_token

        if args.shared_dir is not None and not args.shared_dir.is_dir():
            raise SceneError(f"--shared-dir {args.shared_dir}: no such folder")
        return ServerSegmenter(args.server, args.concurrency, read_token(args.token_file),
                               shared_dir=args.shared_dir)
    if not args.model.is_file():
        raise SceneError(f"{args.model}: no such model file (export one with `geoseg export`)")
    import torch

    from scene.run import LocalSegmenter

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return LocalSegmenter(args.model, device, config, forest=not args.no_forest)


def summary_line(result: SceneResult) -> str:
    """``INPUT -> OUTPUT: N tiles in S s (R tiles/s, C ms of CPU per tile)`` (see :data:`SUMMARY`)."""
    rate = result.tiles / result.seconds if result.seconds else 0.0
    cpu = f", {1000 * result.cpu_seconds / result.tiles:.0f} ms of CPU per tile" if result.tiles else ""
    return (f"{result.job.input} -> {result.job.output}: {result.tiles} tiles in "
            f"{result.seconds:.2f} s ({rate:.1f} tiles/s{cpu})")


def main(argv: Optional[list[str]] = None) -> int:
    cap_gdal_cache()
    keep_freed_memory()
    args = build_parser().parse_args(argv)
    if len(args.paths) < 2:
        return fail("give at least one INPUT and the OUTPUT")
    if args.min_area and not args.vector:
        return fail("--min-area applies to --vector polygons; add --vector")
    if not 2 * args.overlap <= args.tile:
        return fail(f"--overlap must be at most half of --tile ({args.overlap} > {args.tile} / 2)")
    try:
        from scene.run import map_scene

        inputs = list_rasters(args.paths[:-1])
        jobs = plan_jobs(inputs, Path(args.paths[-1]), args.vector, args.stats, args.preview)
        notes = check_inputs(jobs, args.vector, args.min_area)
        jobs = check_outputs(jobs, args.overwrite, args.resume)
        print(*notes, sep="\n", file=sys.stderr, end="\n" if notes else "")
        if not jobs:
            return 0
        config = HandlerConfig(tile_size=args.tile, tile_overlap=args.overlap,
                               tile_blend=args.blend, tile_batch_size=args.tile_batch)
        segmenter = make_segmenter(args, config)
        if getattr(segmenter, "fusion", None) is not None:
            print(f"note: {args.model} carries its forest: the map is network and forest together, "
                  "at many times the network's CPU; --no-forest maps with the network alone",
                  file=sys.stderr)
        for note in reading_notes(jobs, segmenter, bool(args.server)):
            print(note, file=sys.stderr)
        for job in jobs:
            result = map_scene(job, segmenter, config, args.tiles_per_window, args.resume,
                               not args.quiet, args.min_area or 0.0)
            print(summary_line(result), file=sys.stderr)
    except (SceneError, FileExistsError) as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return fail("interrupted; finished windows are kept: run again with --resume", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
