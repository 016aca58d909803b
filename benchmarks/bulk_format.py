"""The handler's host work per tile with the bulk format (``.npy`` in and out) against PNG:
decoding the request and encoding the answer, in-process, CPU time of this thread.

    python -m benchmarks.bulk_format                 # 512 x 512 tile, 200 repeats

For one generated ``--size`` tile: ``decode_image`` of its PNG and of its ``.npy`` (with and
without a validity band), and ``encode`` of a class map as palette PNG and as ``.npy``. Each
stage is timed ``--repeats`` times with ``time.thread_time`` (CPU seconds of this thread: other
load on the machine barely moves it); median and 10th-90th percentile in milliseconds. Results
go to ``benchmarks/results/bulk-format-cpu.json``.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import RESULTS, cpu_machine
from benchmarks.responses import npy_bytes
from common.cli import at_least, parser, write_json
from handler.decode import decode_image
from handler.encode import encode
from model.class_table import ClassTable
from training.data.synthetic import generate_scene


def cpu_ms(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and 10th / 90th percentile of this thread's CPU milliseconds per call of ``fn``."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(1000 * (time.thread_time() - start))
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90)}


def measure(size: int, repeats: int) -> dict[str, Any]:
    rgb, mask = generate_scene((size, size), seed=11)
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(rgb).save(png, format="PNG")
    rgba = np.concatenate([rgb, np.full((size, size, 1), 255, np.uint8)], axis=2)
    rgba[:16, :16, 3] = 0
    table = ClassTable.load()
    classes = mask.astype(np.uint8)
    bodies = {"png": png.getvalue(), "npy": npy_bytes(rgb), "npy_validity": npy_bytes(rgba)}
    limit = size * size
    stages = {f"decode_{name}": cpu_ms(partial(decode_image, body, limit), repeats)
              for name, body in bodies.items()}
    for fmt in ("png", "npy"):
        stages[f"encode_{fmt}"] = cpu_ms(partial(encode, fmt, classes, rgb, table, None), repeats)
    total = {fmt: stages[f"decode_{fmt}"]["median"] + stages[f"encode_{fmt}"]["median"]
             for fmt in ("png", "npy")}
    return {"stages_cpu_ms": stages, "request_bytes": {k: len(v) for k, v in bodies.items()},
            "decode_plus_encode_ms": total, "png_over_npy": total["png"] / total["npy"]}


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.bulk_format", __doc__)
    p.add_argument("--size", type=at_least(16), default=512, help="tile side in pixels")
    p.add_argument("--repeats", type=at_least(1), default=200, help="timed calls per stage")
    p.add_argument("--out", type=Path, default=RESULTS / "bulk-format-cpu.json")
    args = p.parse_args(argv)
    record = {"benchmark": "handler decode + encode per tile: .npy vs PNG, CPU time",
              "machine": cpu_machine(),
              "size": args.size, "repeats": args.repeats, **measure(args.size, args.repeats)}
    for name, value in record["stages_cpu_ms"].items():
        print(f"{name:<20} {value['median']:7.3f} ms  ({value['p10']:.3f}-{value['p90']:.3f})")
    total = record["decode_plus_encode_ms"]
    print(f"decode + encode per tile: png {total['png']:.2f} ms, npy {total['npy']:.2f} ms "
          f"({record['png_over_npy']:.0f}x less with npy)")
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
