"""Do the decoders release the GIL? A batch's requests decoded by 1 thread against N threads.

    python -m benchmarks.decode_threads              # 512 px tiles, batches of 16, threads 1 and 2

For each format a client may send (PNG, JPEG, GeoTIFF deflate, ``.npy``), a batch of ``--batch``
different generated tiles is prepared as the handler does (``handler.batch.prepare_jobs``: read
the request, decode), one thread after the other and then in a pool of each ``--threads`` count,
alternating, ``--rounds`` times. Reported: wall milliseconds per tile (median and min-max over
rounds) and the speed-up of each thread count over 1 thread within the same round. A speed-up
near the thread count (up to the cores) says the decoder runs outside the GIL; near 1, that
threads do not help and only more worker processes would. Results go to
``benchmarks/results/decode-threads-cpu.json``.
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import RESULTS, cpu_machine
from benchmarks.responses import npy_bytes
from common.cli import at_least, parser, write_json
from handler.batch import decode_pool, prepare_jobs
from training.data.synthetic import generate_scene


def geotiff_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as a deflate-compressed, tiled GeoTIFF (the way orthophotos come)."""
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    h, w = rgb.shape[:2]
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                         crs="EPSG:32640", transform=from_origin(300000, 2780000, 0.5, 0.5),
                         tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
        return bytes(memory.read())


def bodies(fmt: str, size: int, count: int) -> list[bytes]:
    """``count`` different generated tiles as request bodies in format ``fmt``."""
    out = []
    for k in range(count):
        rgb, _ = generate_scene((size, size), seed=100 + k)
        if fmt == "npy":
            out.append(npy_bytes(rgb))
        elif fmt == "tiff":
            out.append(geotiff_bytes(rgb))
        else:
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format={"png": "PNG", "jpeg": "JPEG"}[fmt],
                                      **({"quality": 90} if fmt == "jpeg" else {}))
            out.append(buffer.getvalue())
    return out


def batch_ms(rows: list[dict], pool: Any) -> float:
    """Wall milliseconds per request to prepare the batch ``rows``."""
    start = time.perf_counter()
    prepare_jobs(rows, lambda i, n: None, 10**9, None, pool)
    return 1000 * (time.perf_counter() - start) / len(rows)


def measure(fmt: str, size: int, count: int, threads: list[int], rounds: int) -> dict[str, Any]:
    rows = [{"body": body} for body in bodies(fmt, size, count)]
    pools = {n: decode_pool(n) for n in threads}
    batch_ms(rows, None)
    times: dict[int, list[float]] = {n: [] for n in [1, *threads]}
    for _ in range(rounds):
        times[1].append(batch_ms(rows, None))
        for n in threads:
            times[n].append(batch_ms(rows, pools[n]))
    for pool in pools.values():
        if pool is not None:
            pool.shutdown()
    row: dict[str, Any] = {"bytes_per_tile": int(np.mean([len(r["body"]) for r in rows]))}
    for n, values in times.items():
        row[f"threads_{n}_ms"] = {"median": float(np.median(values)), "min": float(min(values)),
                                  "max": float(max(values))}
        if n != 1:
            ratios = np.array(times[1]) / np.array(values)
            row[f"speedup_{n}"] = {"median": float(np.median(ratios)), "min": float(ratios.min()),
                                   "max": float(ratios.max())}
    return row


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.decode_threads", __doc__)
    p.add_argument("--size", type=at_least(16), default=512, help="tile side in pixels")
    p.add_argument("--batch", type=at_least(2), default=16, help="requests per batch")
    p.add_argument("--threads", type=at_least(2), nargs="+", default=[2])
    p.add_argument("--rounds", type=at_least(1), default=15)
    p.add_argument("--formats", nargs="+", default=["png", "jpeg", "tiff", "npy"],
                   choices=["png", "jpeg", "tiff", "npy"])
    p.add_argument("--out", type=Path, default=RESULTS / "decode-threads-cpu.json")
    args = p.parse_args(argv)
    record: dict[str, Any] = {
        "benchmark": "a batch's requests prepared (read + decode) by 1 thread vs a pool",
        "machine": cpu_machine(),
        "size": args.size, "batch": args.batch, "rounds": args.rounds, "formats": {}}
    for fmt in args.formats:
        row = measure(fmt, args.size, args.batch, args.threads, args.rounds)
        record["formats"][fmt] = row
        speedups = ", ".join(f"{n} threads {row[f'speedup_{n}']['median']:.2f}x "
                             f"({row[f'speedup_{n}']['min']:.2f}-{row[f'speedup_{n}']['max']:.2f})"
                             for n in args.threads)
        print(f"{fmt:<5} 1 thread {row['threads_1_ms']['median']:6.2f} ms/tile; {speedups}")
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
