"""How much CPU a fresh TorchServe spends per tile as it warms up.

    python -m benchmarks.frontend_warmup --model standin.pt --format npy --windows 12 --window 200
    python -m benchmarks.frontend_warmup --model standin.pt --format npy --stack 16 --window 20

One client sends one generated request (a 512 px tile as PNG or ``.npy``, or a stack of
``--stack`` tiles as one 4-D ``.npy``) over one connection, one request after the other, to a
TorchServe started with the shipped config. For each window of ``--window`` requests: the CPU
milliseconds per tile of TorchServe's Java frontend and of its worker (psutil, user + system)
and the wall milliseconds per tile; over all windows, the bytes of log the server wrote per
request. The Java frontend compiles its request path with its JIT while it serves the first
thousands of requests, so its first windows cost more than the later ones; ``geoseg bench
--warmup`` sends load for that long before it measures. ``--logging torchserve`` starts the
frontend with TorchServe's built-in logging instead of the project's ``log4j2.xml``. Results go
to ``benchmarks/results/frontend-warmup/<date>-<format>[-stack]-<logging>-logging.json``.
"""
from __future__ import annotations

import datetime as dt
import http.client
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import RESULTS
from benchmarks.cpu_budget import StackProcesses
from benchmarks.images import write_image_set
from benchmarks.responses import ANSWER_TYPE, CONTENT_TYPE, answer_fault
from common.cli import at_least, fail, parser, write_json
from tools.archive import build_archive
from tools.server import LOG_CONFIG, ServerError, TorchServe, worker_env


def request_body(workdir: Path, fmt: str, stack: int) -> tuple[bytes, dict[str, Any]]:
    """One generated request in ``fmt`` (``stack`` > 1: a stack of that many tiles, ``.npy``)
    and its manifest entry."""
    kind = "stacks" if stack > 1 else "tiles"
    manifest = write_image_set(workdir / "images", kind, count=1, fmt=fmt, stack=stack)
    entry = json.loads(manifest.read_text())["images"][0]
    return (manifest.parent / entry["file"]).read_bytes(), entry


def log_bytes(server: TorchServe) -> int:
    """Bytes the server has written so far to its log folder and its console file."""
    files = [*(server.workdir / "logs").glob("*"), server.workdir / "torchserve.out"]
    return sum(f.stat().st_size for f in files if f.is_file())


def measure_windows(server: TorchServe, body: bytes, entry: dict[str, Any], windows: int,
                    window: int, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """``windows`` windows of ``window`` sequential requests of ``body`` to ``server``; per
    window the frontend's and the worker's CPU ms per tile and the wall ms per tile. Every
    answer is checked (status, content type, the entry's size); RuntimeError otherwise."""
    assert server.process is not None
    stack = StackProcesses.of(server.process.pid)
    fmt, tiles = entry["format"], entry["tiles"]
    headers = {"Content-Type": CONTENT_TYPE[fmt], "Accept": ANSWER_TYPE[fmt], **server.auth()}
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]),
                                            timeout=600)
    rows = []
    try:
        for k in range(windows):
            before, started = stack.cpu_seconds(), time.perf_counter()
            for _ in range(window):
                connection.request("POST", "/predictions/geoseg", body, headers)
                response = connection.getresponse()
                content = response.read()
                fault = answer_fault(entry, response.status,
                                     response.getheader("Content-Type", ""), content)
                if fault:
                    raise RuntimeError(f"{fault}: {content[:200]!r}")
            wall, after = time.perf_counter() - started, stack.cpu_seconds()
            per_tile = 1000 / (window * tiles)
            row = {"requests_before": k * window,
                   "frontend_cpu_ms_per_tile": round((after["frontend"] - before["frontend"]) * per_tile, 2),
                   "worker_cpu_ms_per_tile": round((after["worker"] - before["worker"]) * per_tile, 2),
                   "wall_ms_per_tile": round(wall * per_tile, 2)}
            rows.append(row)
            log(f"requests {row['requests_before']:5d}-{row['requests_before'] + window - 1:5d}: "
                f"frontend {row['frontend_cpu_ms_per_tile']:6.2f}, worker "
                f"{row['worker_cpu_ms_per_tile']:6.2f} CPU ms per tile, wall {row['wall_ms_per_tile']:6.2f} ms")
    finally:
        connection.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.frontend_warmup", __doc__)
    p.add_argument("--model", default="model/geoseg.pt", help="exported TorchScript file")
    p.add_argument("--format", choices=("png", "npy"), default="npy", help="request format")
    p.add_argument("--stack", type=at_least(1), default=1,
                   help="tiles per request (more than 1: one 4-D .npy, --format npy)")
    p.add_argument("--windows", type=at_least(1), default=12, help="windows of requests")
    p.add_argument("--window", type=at_least(1), default=200, help="requests per window")
    p.add_argument("--logging", choices=("geoseg", "torchserve"), default="geoseg",
                   help="the frontend's logging: the project's log4j2.xml or TorchServe's built-in")
    p.add_argument("--out", default=str(RESULTS / "frontend-warmup"), help="folder for the JSON")
    args = p.parse_args(argv)
    model = Path(args.model)
    if not model.is_file():
        return fail(f"{args.model} not found (make export)")
    if args.stack > 1 and args.format != "npy":
        return fail("--stack needs --format npy (a stack is one 4-D .npy array)")
    workdir = Path(tempfile.mkdtemp(prefix="geoseg-warmup-"))
    try:
        body, entry = request_body(workdir, args.format, args.stack)
        build_archive(model, workdir / "store")
        log_config = LOG_CONFIG if args.logging == "geoseg" else None
        server = TorchServe(workdir / "store", workdir=workdir / "ts", log_config=log_config).start()
        try:
            logged = log_bytes(server)
            rows = measure_windows(server, body, entry, args.windows, args.window)
            time.sleep(1)  # the frontend writes the worker's lines as it reads them
            logged = log_bytes(server) - logged
        finally:
            server.stop()
    except (ServerError, RuntimeError) as exc:
        return fail(f"{exc} (logs in {workdir})", 1)
    shutil.rmtree(workdir, ignore_errors=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    what = f"stack of {args.stack} (npy)" if args.stack > 1 else f"tile ({args.format})"
    report = {"date": stamp, "machine": f"{platform.machine()} CPU", "model": model.name,
              "request": what, "bytes_per_request": len(body), "window": args.window,
              "logging": LOG_CONFIG.name if args.logging == "geoseg" else "TorchServe's built-in",
              "log_bytes_per_request": round(logged / (args.windows * args.window)),
              "worker_env": worker_env(), "windows": rows}
    name = f"{stamp}-{args.format}{'-stack' if args.stack > 1 else ''}-{args.logging}-logging.json"
    write_json(Path(args.out) / name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
