"""Whole-scene mapping throughput: ``geoseg predict`` (local and ``--server``) against the bare
model, and peak memory on a very large scene.

    python -m benchmarks.predict                      # all three parts, about 10 minutes here
    python -m benchmarks.predict --parts bare local   # or some of them

- ``bare``: the exported model alone (the handler's tile predictor, the same micro-batch),
  tiles/s on random 512 tiles, in a fresh child process like ``geoseg predict``'s and for as
  many tiles as the scene has; with ``local``, each repeat times bare then local back to back,
  and their ratio is taken per pair (median and range over the repeats);
- ``local``: ``geoseg predict`` on a generated scene, tiles/s while segmenting (reading,
  tiling, stitching and writing parts included; the COG assembly after it is timed apart);
- ``server``: ``geoseg predict --server`` against TorchServe with 1 and 2 workers;
- ``rss``: peak RSS of ``geoseg predict`` on a 20000 x 20000 scene, in a child process.

The model is an export of ``--arch`` with random weights (speed does not depend on weights).
Results go to ``benchmarks/results/predict-<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from benchmarks import RESULTS
from benchmarks.gpu import export_random_model
from common.allocator import SWITCH, keep_freed_memory
from common.cli import parser
from handler.inference import HandlerConfig, tile_predictor, warm_up
from handler.tiling import plan_tiles
from model.artifact import load_artifact
from scene.cli import SUMMARY
from training.data.synthetic import generate_scene

BLOCK = 2048


def export_random(arch: str, path: Path) -> Path:
    """The benchmarks' random-weight export of ``arch`` (see benchmarks.gpu)."""
    export_random_model(arch, path)
    return path


def write_large_scene(path: Path, side: int) -> Path:
    """A ``side`` x ``side`` RGB GeoTIFF (DEFLATE, tiled), written block by block from one
    2048-pixel synthetic scene repeated (never whole in memory)."""
    rgb, _ = generate_scene((BLOCK, BLOCK), seed=1)
    block = np.moveaxis(rgb, -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3,
                       dtype="uint8", crs="EPSG:32640", transform=from_origin(3e5, 2.78e6, 0.5, 0.5),
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate") as dst:
        for y in range(0, side, BLOCK):
            for x in range(0, side, BLOCK):
                h, w = min(BLOCK, side - y), min(BLOCK, side - x)
                dst.write(block[:, :h, :w], window=Window(x, y, w, h))
    return path


def bare_tiles_per_second(model: Path, config: HandlerConfig, tiles: int) -> tuple[float, float]:
    """(tiles/s, ms of this process's CPU per tile) of the bare tile predictor over ``tiles``
    tiles (rounded down to whole micro-batches), after the handler's warm-up."""
    device = torch.device("cpu")
    network = load_artifact(model, device).network
    predict = tile_predictor(network, device, False, config.channels_last)
    batch = config.micro_batch(device)
    warm_up(predict, batch, config.tile_size)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (batch, config.tile_size, config.tile_size, 3), dtype=np.uint8)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(tiles // batch):
        predict(data)
    done = (tiles // batch) * batch
    return done / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / done


def bare_in_child(model: Path, tiles: int) -> tuple[float, float]:
    """:func:`bare_tiles_per_second` for ``tiles`` tiles in a fresh child process, started as
    ``geoseg predict``'s is, so both sides pay the same process start-up effects."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.predict", "--child-bare", str(model),
                           "--child-tiles", str(tiles)], capture_output=True, text=True, check=True)
    rate, cpu_ms = json.loads(proc.stdout.strip().splitlines()[-1])
    return rate, cpu_ms


def run_predict(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``geoseg predict`` in a child process (``env``: added to this one's); its summary
    line (tiles, seconds, ms of CPU per tile while segmenting) and peak RSS (MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "scene.cli", *args, "--quiet", "--overwrite"],
                          capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    line = proc.stderr.strip().splitlines()[-1]
    found = SUMMARY.search(line)
    if found is None or found[3] is None:
        raise RuntimeError(f"geoseg predict's summary line not understood: {line!r}")
    tiles, seconds, cpu_ms = int(found[1]), float(found[2]), float(found[3])
    if seconds <= 0:
        raise RuntimeError(f"geoseg predict segmented too fast to time (use a larger --side): {line!r}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"tiles": tiles, "segment_s": seconds, "tiles_per_s": tiles / seconds,
            "cpu_ms_per_tile": cpu_ms,
            "wall_s": wall, "peak_rss_mib": peak / 1024 if peak > before else None}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def serve_and_predict(model: Path, scene: Path, work: Path, workers: int, repeats: int) -> list[float]:
    from handler.inference import model_config_yaml
    from tools.archive import build_archive
    from tools.server import KEY_FILE, TorchServe

    config = work / f"config-{workers}.yaml"
    config.write_text(model_config_yaml({"minWorkers": workers, "maxWorkers": workers,
                                         "batchSize": 1, "maxBatchDelay": 5,
                                         "responseTimeout": 600}))
    store = build_archive(model, work / f"store-{workers}", config=config).parent
    server = TorchServe(store, workdir=work / f"ts-{workers}").start(timeout=300)
    try:
        return [run_predict([str(scene), str(work / "served.tif"), "--server", server.url,
                             "--concurrency", str(2 * workers),
                             "--token-file", str(server.workdir / KEY_FILE)])["tiles_per_s"]
                for _ in range(repeats)]
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.predict", __doc__)
    p.add_argument("--arch", default="deeplabv3_mobilenet_v3_large")
    p.add_argument("--model", type=Path, default=None,
                   help="an exported model to time instead of a random-weight export of --arch")
    p.add_argument("--side", type=int, default=4608, help="scene side for bare/local/server")
    p.add_argument("--rss-side", type=int, default=20000, help="scene side for the memory run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parts", nargs="+", default=["bare", "local", "server", "rss"],
                   choices=["bare", "local", "server", "rss"])
    p.add_argument("--out", type=Path, default=RESULTS / "predict-cpu.json")
    p.add_argument("--compare-allocator", action="store_true",
                   help=f"also time local mode with the C library's default allocator settings "
                        f"({SWITCH}=0) in each repeat")
    p.add_argument("--local-variants", nargs="+", default=["taper:4"], metavar="BLEND:N",
                   help="local runs in each repeat: --blend, --tiles-per-window and optionally "
                        "--overlap of each (e.g. centre:4:64 taper:4 taper:8); the first is "
                        "reported as `local`; scene tiles are counted at the default overlap")
    p.add_argument("--child-bare", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-tiles", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    keep_freed_memory()  # as geoseg predict does
    config = HandlerConfig()
    if args.child_bare is not None:  # one bare measurement, for bare_in_child
        print(json.dumps(bare_tiles_per_second(args.child_bare, config, args.child_tiles)))
        return 0
    result: dict[str, Any] = {"machine": f"{platform.node()} {platform.processor() or 'cpu'}",
                              "cpus": len(os.sched_getaffinity(0)),
                              "arch": args.arch if args.model is None else str(args.model.name),
                              "tile": config.tile_size,
                              "overlap": config.tile_overlap,
                              "micro_batch": config.micro_batch("cpu"), "side": args.side}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or export_random(args.arch, work / "model.pt")
        scene = write_large_scene(work / "scene.tif", args.side)
        tiles = len(plan_tiles(args.side, args.side, config.tile_size, config.tile_overlap))
        bare: list[tuple[float, float]] = []
        runs: list[dict[str, Any]] = []
        default_runs: list[dict[str, Any]] = []
        local = [str(scene), str(work / "local.tif"), "--model", str(model)]
        variants = {v: [*local, "--blend", v.split(":")[0], "--tiles-per-window", v.split(":")[1],
                        "--overlap", (v.split(":") + [str(config.tile_overlap)])[2]]
                    for v in args.local_variants}
        by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for _ in range(args.repeats):  # interleaved, so that a drift of the machine hits both
            if "bare" in args.parts:
                bare.append(bare_in_child(model, tiles))
            if "local" in args.parts:
                for name, command in variants.items():
                    by_variant[name].append(run_predict(command))
            if args.compare_allocator:
                default_runs.append(run_predict(variants[args.local_variants[0]],
                                                env={SWITCH: "0"}))
        runs = by_variant[args.local_variants[0]]
        if bare:
            result["bare_tiles_per_s"] = summary([rate for rate, _ in bare])
            result["bare_cpu_ms_per_tile"] = summary([cpu for _, cpu in bare])
            print("bare", result["bare_tiles_per_s"], flush=True)
        for name, found in by_variant.items():
            if not found:
                continue
            # the scene's own tiles per second: what a user waits for (a blended window also
            # runs the last tile of the window before it)
            record = {"tiles_run": found[0]["tiles"], "scene_tiles": tiles,
                      "segment_s": summary([r["segment_s"] for r in found]),
                      "tiles_per_s": summary([r["tiles_per_s"] for r in found]),
                      "scene_tiles_per_s": summary([tiles / r["segment_s"] for r in found]),
                      "wall_s": summary([r["wall_s"] for r in found]),
                      "cpu_ms_per_tile": summary([r["cpu_ms_per_tile"] for r in found])}
            if bare:
                pairs = [tiles / r["segment_s"] / rate for r, (rate, _) in zip(found, bare)]
                record["scene_over_bare"] = summary(pairs) | {"pairs": pairs}
            result.setdefault("local_variants", {})[name] = record
            print("local", name, record, flush=True)
        if runs:
            result["local"] = result["local_variants"][args.local_variants[0]]
        if default_runs:
            result["local_default_allocator"] = {
                "tiles_per_s": summary([r["tiles_per_s"] for r in default_runs]),
                "cpu_ms_per_tile": summary([r["cpu_ms_per_tile"] for r in default_runs])}
            print("local, default allocator", result["local_default_allocator"], flush=True)
            if runs:
                gains = [r["tiles_per_s"] / d["tiles_per_s"] for r, d in zip(runs, default_runs)]
                result["kept_over_default_allocator"] = summary(gains) | {"pairs": gains}
                print("local, kept ÷ default allocator", result["kept_over_default_allocator"])
        if bare and runs:
            pairs = [r["tiles_per_s"] / rate for r, (rate, _) in zip(runs, bare)]
            result["local_over_bare"] = summary(pairs) | {"pairs": pairs}
            cpu_pairs = [cpu / r["cpu_ms_per_tile"] for r, (_, cpu) in zip(runs, bare)]
            result["local_over_bare_by_cpu_time"] = summary(cpu_pairs) | {"pairs": cpu_pairs}
            print("local / bare (tiles run), each pair measured back to back",
                  result["local_over_bare"], "; by CPU time per tile",
                  result["local_over_bare_by_cpu_time"], flush=True)
        if "server" in args.parts:
            result["server"] = {str(w): summary(serve_and_predict(model, scene, work, w, args.repeats))
                                for w in (1, 2)}
            print("server", result["server"], flush=True)
        if "rss" in args.parts:
            big = write_large_scene(work / "big.tif", args.rss_side)
            run = run_predict([str(big), str(work / "big-map.tif"), "--model", str(model)])
            run["decoded_input_mib"] = args.rss_side ** 2 * 3 / 2 ** 20
            run["side"] = args.rss_side
            result["rss"] = run
            print("rss", run, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
