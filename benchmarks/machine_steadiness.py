"""Is this machine steady enough to compare two runs? Memory and compute probes on every core.

    python -m benchmarks.machine_steadiness --seconds 120

One process per core, pinned to it, repeats for ``--seconds`` one of two probes:

- ``memory``: copy a ``--buffer-mb`` float32 buffer into another and back (larger than a core's
  caches: the copy runs at the speed of the last-level cache and memory, which a virtual
  machine shares with its host's other guests);
- ``compute``: multiply two 256 x 256 float32 matrices (they stay in the core's own caches).

Each repetition is timed; the result is, per probe and per core, the median time of every
second, and the seconds that were slow: median more than ``--slow`` times the core's good pace
(the 10th percentile of its seconds). Seconds slow on every core at once, and per-second
medians that rise and fall together across the cores (their correlation), say that the
machine changed under the processes (its host), not that one of them did. Results go to
``benchmarks/results/machine-steadiness/<stamp>.json``.

The CPU benchmarks' served rows vary by more than their differences on some days
(docs/performance.md, "The worker's slow spells"): run this before and after a series to see
whether the machine held still.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import RESULTS, cpu_machine
from common.cli import at_least, fail, parser, write_json

PROBES = ("memory", "compute")


def probe_core(kind: str, core: int, seconds: float, buffer_mb: int,
               start_at: float) -> list[tuple[float, float]]:
    """(seconds since ``start_at``, milliseconds) of each repetition of probe ``kind`` on
    ``core`` (this process pinned to it, one thread), for ``seconds`` from ``start_at``
    (``time.monotonic`` clock, so that every core starts and ends together)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    if kind == "memory":
        a = np.ones(buffer_mb * 2 ** 20 // 4, np.float32)
        b = np.empty_like(a)

        def work() -> None:
            np.copyto(b, a)
            np.copyto(a, b)
    else:
        rng = np.random.default_rng(core)
        x, y = rng.random((256, 256), np.float32), rng.random((256, 256), np.float32)

        def work() -> None:
            for _ in range(8):
                x @ y
    while time.monotonic() < start_at:
        time.sleep(0.001)
    times: list[tuple[float, float]] = []
    while (now := time.monotonic()) < start_at + seconds:
        work()
        times.append((now - start_at, 1000 * (time.monotonic() - now)))
    return times


def per_second(times: list[tuple[float, float]], seconds: int) -> list[float | None]:
    """Median milliseconds of the repetitions that started in each whole second (None where
    none did)."""
    buckets: list[list[float]] = [[] for _ in range(seconds)]
    for at, ms in times:
        if int(at) < seconds:
            buckets[int(at)].append(ms)
    return [round(float(np.median(b)), 3) if b else None for b in buckets]


def summarise(medians: list[list[float | None]], slow: float) -> dict[str, Any]:
    """Per core (rows of ``medians``: per-second medians, ms), the 10th, 50th and 90th
    percentile of its seconds and its slow seconds (above ``slow`` times its 10th percentile,
    the machine's good pace); then the seconds slow on every core at once and the mean
    correlation of the cores' per-second medians (near 1: the cores slowed and sped up
    together)."""
    cores, slow_sets = [], []
    for row in medians:
        values = np.array([m for m in row if m is not None])
        p10, p50, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
        slow_seconds = [s for s, m in enumerate(row) if m is not None and m > slow * p10]
        slow_sets.append(set(slow_seconds))
        cores.append({"p10_ms": round(p10, 3), "median_ms": round(p50, 3), "p90_ms": round(p90, 3),
                      "slow_seconds": slow_seconds})
    seconds = [s for s in range(len(medians[0])) if all(r[s] is not None for r in medians)]
    pairs = [(i, j) for i in range(len(medians)) for j in range(i + 1, len(medians))]
    correlation = None
    if pairs and len(seconds) > 2:
        series = np.array([[r[s] for s in seconds] for r in medians], dtype=float)
        correlation = round(float(np.nanmean([np.corrcoef(series[i], series[j])[0, 1]
                                              for i, j in pairs])), 3)
    return {"cores": cores, "slow_on_every_core": sorted(set.intersection(*slow_sets)),
            "correlation_between_cores": correlation}


ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
"""The probes' environment: numpy's BLAS on one thread, or each probe's threads would crowd
the other cores' probes."""


def run_probe(kind: str, cores: list[int], seconds: int, buffer_mb: int) -> list[list[float | None]]:
    """Per-second medians of probe ``kind`` on each of ``cores``, all at the same time."""
    start_at = time.monotonic() + 2.0  # every process loaded and pinned before it starts
    saved = {name: os.environ.get(name) for name in ONE_THREAD}
    os.environ.update(ONE_THREAD)  # what the spawned processes' BLAS reads as they import numpy
    try:
        pool = multiprocessing.get_context("spawn").Pool(len(cores))
    finally:  # this process's own environment as it was
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    with pool:
        runs = pool.starmap(probe_core, [(kind, c, seconds, buffer_mb, start_at) for c in cores])
    return [per_second(times, seconds) for times in runs]


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.machine_steadiness", __doc__)
    p.add_argument("--seconds", type=at_least(2), default=60, help="seconds per probe")
    p.add_argument("--buffer-mb", type=at_least(1), default=16,
                   help="memory probe's buffer, MiB (two of them)")
    p.add_argument("--slow", type=float, default=1.5,
                   help="a second is slow when its median exceeds the run's by this factor")
    p.add_argument("--probes", default=",".join(PROBES), help="which probes, comma-separated")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON result (default: benchmarks/results/machine-steadiness/<stamp>.json)")
    args = p.parse_args(argv)
    probes = [k.strip() for k in args.probes.split(",") if k.strip()]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown or not probes:
        return fail(f"--probes takes {', '.join(PROBES)}; got {args.probes!r}")
    if args.slow <= 1:
        return fail(f"--slow must be above 1, got {args.slow}")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    record: dict[str, Any] = {"benchmark": "machine steadiness: pinned probes on every core",
                              "machine": cpu_machine(numpy=np.__version__), "cores": cores,
                              "seconds": args.seconds, "buffer_mb": args.buffer_mb,
                              "slow_factor": args.slow, "probes": {}}
    for kind in probes:
        print(f"{kind} probe on cores {cores} for {args.seconds} s ...", flush=True)
        medians = run_probe(kind, cores, args.seconds, args.buffer_mb)
        summary = summarise(medians, args.slow)
        record["probes"][kind] = {"per_second_median_ms": medians, **summary}
        for core, s in zip(cores, summary["cores"], strict=True):
            print(f"  core {core}: seconds' medians {s['p10_ms']:.2f} / {s['median_ms']:.2f} / "
                  f"{s['p90_ms']:.2f} ms (10th / 50th / 90th percentile), "
                  f"{len(s['slow_seconds'])} of {args.seconds} s slow")
        r = summary["correlation_between_cores"]
        print(f"  slow on every core at once: {len(summary['slow_on_every_core'])} s; "
              f"correlation between cores: {'n/a' if r is None else f'{r:.2f}'}")
    out = args.out or RESULTS / "machine-steadiness" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
