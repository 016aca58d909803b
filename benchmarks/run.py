"""Load-test the served model against the bare model's ceiling and the Flask peer, in one run.

One run: measure the bare TorchScript model (tiles/s at the handler's micro-batch, same
precision), build an archive with the given batch settings, start TorchServe on loopback, run
locust headless for each user count, stop the server, run the same load against the Flask peer,
and write ``<out>/<stamp>-<device>.json``, a row per setting and user count in
``<out>/results.md``, and a plot (throughput and p95 latency against users, or against batch
size in a sweep).

    geoseg bench --model model/geoseg.pt --users 1 4 --duration 120
    geoseg bench --sweep --batch-sizes 1 4 --delays 10 100 --tile-batches 1 4

The module is three steps: :func:`settings_grid` (which settings to run), :func:`run_setting`
(bare + served + peer for one setting) and :func:`write_report` (JSON, results.md, plot).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from benchmarks.cpu_budget import StackProcesses, children_cpu_seconds, cpu_budget
from benchmarks.images import FORMATS, write_image_set
from benchmarks.model_throughput import count_flops, device_name, measure
from common.allocator import keep_freed_memory
from common.cli import at_least, fail, parser
from handler.inference import HandlerConfig, model_config_yaml
from handler.metrics import STAGE_MS, STAGES
from model.artifact import load_artifact
from tools.archive import build_archive
from tools.server import (
    LOG_CONFIG,
    Sample,
    ServerError,
    TorchServe,
    free_port,
    metric_total,
    scrape_metrics,
    worker_env,
)

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"
TARGET_SERVED_OVER_BARE = 0.9
HANDLER_DEFAULTS = HandlerConfig()  # the one source of tile size, overlap, micro-batch, layout
SHIPPED = yaml.safe_load((ROOT / "model" / "model-config.yaml").read_text())
"""The shipped TorchServe settings (batchSize, maxBatchDelay, workers): the benchmark's defaults."""


@dataclass(frozen=True)
class ServeSettings:
    """TorchServe batching and the handler's tile settings for one served run.

    Sizes in pixels, ``max_batch_delay_ms`` in milliseconds. Tile defaults are the handler's.
    """

    batch_size: int = SHIPPED["batchSize"]
    max_batch_delay_ms: int = SHIPPED["maxBatchDelay"]
    workers: int = SHIPPED["maxWorkers"]
    tile_batch: int = HANDLER_DEFAULTS.tile_batch_size
    precision: str = "fp32"  # fp16 applies on CUDA only
    tile: int = HANDLER_DEFAULTS.tile_size
    overlap: int = HANDLER_DEFAULTS.tile_overlap
    channels_last: bool = HANDLER_DEFAULTS.channels_last
    decode_threads: int = HANDLER_DEFAULTS.decode_threads
    shared: bool = False  # requests through a shared folder (handler.shared), not HTTP bodies
    cuda_wait: str = HANDLER_DEFAULTS.cuda_wait  # "block" or "spin" (CUDA only)

    def torchserve_config(self, device: str) -> dict[str, Any]:
        """TorchServe's own model-config.yaml keys for ``device`` ("cpu", "cuda", "cuda:N")."""
        return {"minWorkers": self.workers, "maxWorkers": self.workers,
                "batchSize": self.batch_size, "maxBatchDelay": self.max_batch_delay_ms,
                "responseTimeout": 900,
                "deviceType": "gpu" if device.startswith("cuda") else "cpu"}

    def handler_config(self, shared_dir: str = "") -> HandlerConfig:
        """The ``handler:`` section these settings ask for (other keys at their defaults;
        ``shared_dir``: the shared folder's path, when :attr:`shared`)."""
        return replace(HANDLER_DEFAULTS, tile_size=self.tile, tile_overlap=self.overlap,
                       tile_batch_size=self.tile_batch, half_precision=self.precision == "fp16",
                       channels_last=self.channels_last, decode_threads=self.decode_threads,
                       shared_dir=shared_dir, cuda_wait=self.cuda_wait)

    def model_config(self, device: str, shared_dir: str = "") -> str:
        """The archive's model-config.yaml for ``device``, as YAML text (PyYAML, through
        the handler's own writer, ``handler.inference.model_config_yaml``)."""
        return model_config_yaml(self.torchserve_config(device), self.handler_config(shared_dir))


# --- measuring --------------------------------------------------------------------------------

def failure_summary(load: Mapping[str, Any]) -> str:
    """``failures N`` of a :func:`run_locust` result, with its most frequent reason when there
    are failures (``failures 12, most: HTTPError('503 Server Error ...')``)."""
    reasons = load.get("failure_reasons") or {}
    if not load["failures"] or not reasons:
        return f"failures {load['failures']}"
    reason, count = max(reasons.items(), key=lambda item: item[1])
    return f"failures {load['failures']}, {count} of them: {reason[:120]}"


def run_locust(host: str, target: str, manifest: Path, users: int, duration: int,
               workdir: Path, processes: int = 1, key: Optional[str] = None,
               expect_answers: bool = True, shared: Optional[Path] = None) -> dict[str, Any]:
    """Run locust headless against ``host`` (sending the inference ``key`` when given);
    requests/s, latency percentiles, tiles/s. RuntimeError when no request was answered,
    unless not ``expect_answers`` (a warm-up shorter than one answer): then only ``users``,
    ``duration_s`` and ``requests`` (0).
    ``processes`` > 1 forks that many locust workers (``--processes``): one Python process
    sends at most about one core's worth of requests, so a fast server needs several for the
    client not to be the limit. Each process counts its own tiles (``<tiles file>.<pid>``).
    ``shared``: the server's shared folder, through which the users then pass their requests'
    bytes and answers (``handler.shared``)."""
    prefix = workdir / f"{target}-u{users}"
    tiles_out = workdir / f"{target}-u{users}-tiles.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GEOSEG_IMAGES": str(manifest), "GEOSEG_TARGET": target,
           "GEOSEG_DURATION": str(duration), "GEOSEG_TILES_OUT": str(tiles_out),
           "GEOSEG_KEY": key or "", "GEOSEG_SHARED_DIR": str(shared or "")}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
           "-r", str(users), "-t", f"{duration}s", "--stop-timeout", "900", "--csv", str(prefix),
           "--host", host, "--only-summary", "--reset-stats", "--loglevel", "WARNING"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.exists():
        raise RuntimeError(f"locust wrote no statistics: {proc.stderr.strip()[-2000:]}")
    with stats_file.open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    if int(row["Request Count"]) == 0:
        if not expect_answers:
            return {"users": users, "duration_s": duration, "requests": 0}
        raise RuntimeError(f"no {target} request was answered within {duration} s of load "
                           f"({users} users): give it a longer --duration")
    failures_file = Path(f"{prefix}_failures.csv")
    reasons: dict[str, int] = {}
    if failures_file.exists():  # locust's own: one row per distinct error, with its count
        with failures_file.open() as fh:
            for r in csv.DictReader(fh):
                reasons[r["Error"][:200]] = reasons.get(r["Error"][:200], 0) + int(r["Occurrences"])
    tiles = {"tiles": 0, "images": 0, "late": 0}
    for part in tiles_out.parent.glob(tiles_out.name + ".*"):  # one file per locust process
        counted = json.loads(part.read_text())
        tiles = {k: tiles[k] + counted[k] for k in tiles}
        part.unlink()
    return {"users": users, "duration_s": duration, "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]), "failure_reasons": reasons,
            "requests_per_s": float(row["Requests/s"]),
            "p50_ms": float(row["50%"]), "p95_ms": float(row["95%"]), "p99_ms": float(row["99%"]),
            "images_in_window": tiles["images"], "late_answers": tiles["late"],
            "tiles_per_s": tiles["tiles"] / duration,
            "client_processes": processes}


@functools.lru_cache(maxsize=4)
def model_and_flops(model_path: Path, tile: int) -> tuple[torch.jit.ScriptModule, float]:
    """The exported model and its FLOPs per tile, loaded and counted once per run."""
    model = load_artifact(model_path, "cpu").network
    return model, count_flops(model, tile)


def bare_tiles_per_s(model_path: Path, device: str, settings: ServeSettings, repeats: int = 15
                     ) -> dict[str, Any]:
    """The ceiling: the bare model's best tiles/s over batch sizes 1, 2, 4 .. tile_batch, at the
    handler's precision and memory format (the batch the server runs depends on the load)."""
    model, flops = model_and_flops(model_path, settings.tile)
    cuda = device.startswith("cuda")
    top = HandlerConfig(tile_batch_size=settings.tile_batch).micro_batch(device)
    sizes = sorted({min(2 ** k, top) for k in range(top.bit_length())})
    runs, cpu_ms = [], {}
    for bs in sizes:
        cpu_start = time.process_time()  # this process's CPU, all its threads
        runs.append(measure(model, torch.device(device), settings.precision if cuda else "fp32",
                            settings.channels_last, bs, settings.tile, flops, ceiling=float("inf"),
                            warmup=5, repeats=repeats))
        cpu_ms[bs] = 1000 * (time.process_time() - cpu_start) / ((5 + repeats) * bs)
    best = max(runs, key=lambda m: m.tiles_per_s)
    return {"tiles_per_s": best.tiles_per_s, "batch_size": best.batch_size,
            "cpu_ms_per_tile": round(cpu_ms[best.batch_size], 2),
            "batch_seconds_median": best.seconds_median, "batch_seconds_min": best.seconds_min,
            "batch_seconds_max": best.seconds_max, "gflop_per_tile": flops / 1e9,
            "by_batch_size": {m.batch_size: m.tiles_per_s for m in runs}}


def serve_and_load(model_path: Path, device: str, settings: ServeSettings, manifest: Path,
                   users: list[int], duration: int, workdir: Path,
                   client_processes: int = 1, warmup: int = 0) -> list[dict[str, Any]]:
    """Archive the model with ``settings``, start TorchServe on loopback, send ``warmup``
    seconds of load at the largest user count that no result counts, run locust once per
    user count (``duration`` seconds each), stop the server; one locust result per user count.

    The warm-up is there for TorchServe's Java frontend: its JIT compiles the request path
    during the first thousand or so requests, and until then it spends 2.5-4.5x its later CPU
    per request (512 px ``.npy`` tiles one after the other on the 2-core VM: 11.2 ms per
    request in the first 200, 2.75-4.5 from the 800th on; ``benchmarks.frontend_warmup``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shared = shared_folder_for_load() if settings.shared else None
    config = workdir / "model-config.yaml"
    config.write_text(settings.model_config(device, str(shared or "")))
    build_archive(model_path, workdir / "store", config=config)
    server = TorchServe(workdir / "store", workdir=workdir / "ts").start(timeout=600)
    try:
        assert server.process is not None
        stack = StackProcesses.of(server.process.pid)
        warmed = {"seconds": warmup, "requests": 0}
        if warmup > 0:
            (workdir / "warmup").mkdir(exist_ok=True)
            warmed["requests"] = run_locust(server.url, "geoseg", manifest, max(users), warmup,
                                            workdir / "warmup", client_processes,
                                            server.key("inference"),
                                            expect_answers=False, shared=shared)["requests"]
        results = []
        for u in users:
            before = scrape_metrics(server.metrics_url)
            cpu_before, locust_before = stack.cpu_seconds(), children_cpu_seconds()
            started = time.perf_counter()
            result = run_locust(server.url, "geoseg", manifest, u, duration, workdir,
                                client_processes, server.key("inference"), shared=shared)
            result["cpu_ms_per_request"] = cpu_budget(stack, cpu_before, locust_before,
                                                      result["requests"],
                                                      time.perf_counter() - started)
            time.sleep(1.0)  # the frontend forwards the worker's metric lines asynchronously
            result["stages"] = stage_breakdown(before, scrape_metrics(server.metrics_url))
            result["warmup"] = warmed
            results.append(result)
        return results
    finally:
        server.stop()
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


SHARED_PREFIX = "geoseg-shared-"


def shared_parent() -> Path:
    """Where load tests make their shared folders: ``/dev/shm`` where there is one (Linux:
    the files stay in memory), else the temporary folder."""
    memory = Path("/dev/shm")
    return memory if memory.is_dir() else Path(tempfile.gettempdir())


def shared_folder_for_load() -> Path:
    """A new folder for the server's and the clients' shared files, in :func:`shared_parent`."""
    return Path(tempfile.mkdtemp(prefix=SHARED_PREFIX, dir=shared_parent()))


def stage_breakdown(before: list[Sample], after: list[Sample]) -> dict[str, float]:
    """Milliseconds per request, from TorchServe's own counters and the handler's stage
    counters between two scrapes: ``in_torchserve`` (frontend receipt to answer, TorchServe's
    ``ts_inference_latency_microseconds``), ``queue`` (``ts_queue_latency_microseconds``: waiting
    for a worker, the batch delay included), the handler's ``decode`` / ``model`` / ``encode``
    (a batch's wall time shared by its requests) and ``rest`` (what is left of
    ``in_torchserve``: with one user the frontend and the socket to the worker; with several,
    also the time a request waits while the rest of its batch is processed). Requests: ``ts_inference_requests_total``; empty when none ran."""
    def delta(name: str, **labels: str) -> float:
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    requests = delta("ts_inference_requests_total")
    if requests <= 0:
        return {}
    out = {"requests": requests,
           "in_torchserve": delta("ts_inference_latency_microseconds") / 1000 / requests,
           "queue": delta("ts_queue_latency_microseconds") / 1000 / requests}
    for stage in STAGES:
        out[stage] = delta(STAGE_MS, Stage=stage) / requests
    out["rest"] = out["in_torchserve"] - out["queue"] - sum(out[s] for s in STAGES)
    return out


def peer_load(model_path: Path, device: str, manifest: Path, users: list[int], duration: int,
              workdir: Path, client_processes: int = 1) -> list[dict[str, Any]]:
    """The same load against the Flask peer (whole image per request, no batching)."""
    port = free_port()
    log = open(workdir / "flask_peer.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.flask_peer", "--model",
                             str(model_path), "--device", device, "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Flask peer did not start; see flask_peer.out") from None
                time.sleep(0.5)
        return [run_locust(f"http://127.0.0.1:{port}", "peer", manifest, u, duration, workdir,
                           client_processes) for u in users]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def summarise(served: dict[str, Any], bare: dict[str, Any], peer: Optional[dict[str, Any]]
              ) -> dict[str, Any]:
    """Served ÷ bare against the target, and GeoSeg ÷ peer (tiles/s, p95) when a peer ran."""
    ratio = served["tiles_per_s"] / bare["tiles_per_s"] if bare["tiles_per_s"] else 0.0
    out = {"served_over_bare": ratio,
           "target_served_over_bare": {"target": TARGET_SERVED_OVER_BARE, "met":
                                       ratio >= TARGET_SERVED_OVER_BARE and served["failures"] == 0,
                                       "short_by": max(0.0, TARGET_SERVED_OVER_BARE - ratio)}}
    if peer:
        out["peer"] = peer
        out["geoseg_over_peer_tiles_per_s"] = (served["tiles_per_s"] / peer["tiles_per_s"]
                                               if peer["tiles_per_s"] else None)
        out["geoseg_over_peer_p95"] = served["p95_ms"] / peer["p95_ms"] if peer["p95_ms"] else None
    return out


# --- the three steps of a run: grid, runner, reporter -----------------------------------------

@dataclass(frozen=True)
class Grid:
    """What one run measures: the settings to serve, and the locust user counts for each."""

    settings: list[ServeSettings]
    users: list[int]


def settings_grid(args: argparse.Namespace) -> Grid:
    """The ServeSettings to run. One setting from the single-value options; with ``--sweep``,
    every combination of ``--batch-sizes`` x ``--delays`` x ``--worker-counts`` x
    ``--tile-batches`` at the first ``--users`` value only."""
    base = ServeSettings(batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay,
                         workers=args.workers, tile_batch=args.tile_batch,
                         precision=args.precision, tile=args.tile, overlap=args.overlap,
                         channels_last=not args.no_channels_last, shared=args.shared)
    if not args.sweep:
        return Grid([base], list(args.users))
    combos = itertools.product(args.batch_sizes, args.delays, args.worker_counts, args.tile_batches)
    return Grid([replace(base, batch_size=b, max_batch_delay_ms=d, workers=w, tile_batch=t)
                 for b, d, w, t in combos], list(args.users[:1]))


def run_setting(model_path: Path, device: str, settings: ServeSettings, manifest: Path,
                users: list[int], duration: int, workdir: Path,
                peer: Optional[list[dict[str, Any]]], labels: Mapping[str, Any],
                client_processes: int = 1, warmup: int = 0) -> list[dict[str, Any]]:
    """One setting: the bare ceiling, the served load at each user count, and the comparison
    with ``peer`` (the Flask peer's load at the same user counts; it does not depend on the
    setting, so a run measures it once and passes it to every setting). One result row per
    user count, starting with ``labels`` (date, device, arch, image set).

    The bare model is timed before and after the served runs and the ceiling is their mean
    (``before`` and ``after`` kept beside it): on a noisy machine its speed drifts over minutes,
    and a single measurement on one side moved served ÷ bare by up to 0.2 here."""
    before = bare_tiles_per_s(model_path, device, settings)
    served = serve_and_load(model_path, device, settings, manifest, users, duration, workdir,
                            client_processes, warmup)
    after = bare_tiles_per_s(model_path, device, settings)
    bare = before | {"tiles_per_s": (before["tiles_per_s"] + after["tiles_per_s"]) / 2,
                     "before": before["tiles_per_s"], "after": after["tiles_per_s"]}
    rows = []
    for i, load in enumerate(served):
        peer_i = peer[i] if peer else None
        row = {**labels, "settings": asdict(settings), "bare": bare, "served": load,
               **summarise(load, bare, peer_i)}
        rows.append(row)
        print(f"  users {load['users']}: {load['tiles_per_s']:.2f} tiles/s served, "
              f"{bare['tiles_per_s']:.2f} bare (before {bare['before']:.2f}, after "
              f"{bare['after']:.2f}; ratio {row['served_over_bare']:.2f}), "
              f"p95 {load['p95_ms']:.0f} ms, {failure_summary(load)}"
              + (f"; peer {peer_i['tiles_per_s']:.2f} tiles/s" if peer_i else ""), flush=True)
        if load.get("stages"):
            print("    ms per request: " + ", ".join(
                f"{k} {v:.1f}" for k, v in load["stages"].items() if k != "requests"), flush=True)
    return rows


@dataclass(frozen=True)
class Report:
    """The files one run wrote."""

    json: Path
    markdown: Path
    plot: Path
    best_settings: dict[str, Any] = field(default_factory=dict)


MD_HEADER = ("| date | device | model | images | users | batchSize | delay ms | workers | tile batch "
             "| precision | channels_last | tiles/s | bare tiles/s | served ÷ bare | req/s | p50 ms | p95 ms | p99 ms "
             "| failures | peer tiles/s | GeoSeg ÷ peer tiles/s | peer p95 ms | GeoSeg ÷ peer p95 |\n"
             "| " + " | ".join(["---"] * 23) + " |\n")


def markdown_row(r: dict[str, Any]) -> str:
    """One results.md row (columns of :data:`MD_HEADER`) for one result row."""
    s, v, peer = r["settings"], r["served"], r.get("peer") or {}

    def f(x: Any, digits: int = 2) -> str:
        return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)
    return ("| " + " | ".join([
        r["date"], r["device"], str(r["arch"]), r["images"], str(v["users"]), str(s["batch_size"]),
        str(s["max_batch_delay_ms"]), str(s["workers"]), str(s["tile_batch"]), s["precision"],
        str(s.get("channels_last", False)).lower(),
        f(v["tiles_per_s"]), f(r["bare"]["tiles_per_s"]), f(r["served_over_bare"]),
        f(v["requests_per_s"]), f(v["p50_ms"], 0), f(v["p95_ms"], 0), f(v["p99_ms"], 0),
        str(v["failures"]), f(peer.get("tiles_per_s")), f(r.get("geoseg_over_peer_tiles_per_s")),
        f(peer.get("p95_ms"), 0), f(r.get("geoseg_over_peer_p95"))]) + " |\n")


def request_kind(row: Mapping[str, Any]) -> str:
    """What a row's requests were, e.g. ``tiles (png)``: results written before the format was
    always named say ``tiles`` or ``scenes`` alone for PNG."""
    images = str(row.get("images", "tiles"))
    return images if "(" in images else f"{images} (png)"


def plot_title(rows: list[dict[str, Any]], x_key: str) -> str:
    """The plot's title: model, device, requests; and the server's workers and batchSize when
    every row shares them (against users; a sweep varies them along the x axis)."""
    first = rows[0]
    title = f"{first['arch']} on {first['device']}, {request_kind(first)}"
    if x_key != "users":
        return title
    workers, batch = first["settings"]["workers"], first["settings"]["batch_size"]
    return f"{title}, {workers} worker{'s' if workers != 1 else ''} x batchSize {batch}"


TITLE_WIDTH = 80
"""Characters of the plot's title per line: what a 6.5-inch figure holds at 9 points."""


def title_lines(title: str, width: int = TITLE_WIDTH) -> str:
    """``title`` on lines of at most ``width`` characters, broken after its commas where it
    can (``x batchSize 4`` stays on one line), inside a part only when that part alone is
    longer than a line."""
    lines: list[str] = []
    for part in title.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += f", {part}"
            continue
        if lines:
            lines[-1] += ","
        lines.extend(textwrap.wrap(part, width) or [""])
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], x_key: str, path: Path) -> None:
    """Served tiles/s and p95 against ``x_key`` (users, or a setting in a sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["served"]["users"] if x_key == "users" else r["settings"][x_key] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    ax.plot(xs, [r["served"]["tiles_per_s"] for r in rows], "o-", label="served tiles/s")
    ax.plot(xs, [r["bare"]["tiles_per_s"] for r in rows], "kx--", label="bare model tiles/s")
    if all(r.get("peer") for r in rows):
        ax.plot(xs, [r["peer"]["tiles_per_s"] for r in rows], "s-", label="Flask peer tiles/s")
    ax.set_xticks(sorted(set(xs)))  # the measured settings only (a lone one got 15.2, 15.4, ...)
    ax.set_xlabel(x_key)
    ax.set_ylim(0, 1.1 * ax.get_ylim()[1])  # served against bare at their true proportion
    ax.set_ylabel("tiles / s")
    ax2 = ax.twinx()
    p95 = [r["served"]["p95_ms"] for r in rows]
    ax2.plot(xs, p95, "r^:", label="served p95 ms")
    ax2.set_ylim(0, 1.1 * max(p95))  # from 0 too: a lone point got an axis of +-200 ms around it
    ax2.set_ylabel("p95 latency (ms)")
    if len(rows) == 1:  # a lone row: its values written beside the points
        (r,) = rows
        labelled = [(ax, r["served"]["tiles_per_s"], "C0", 8, "tiles/s"),
                    (ax, r["bare"]["tiles_per_s"], "k", 8, "tiles/s"),
                    (ax2, r["served"]["p95_ms"], "r", -8, "ms")]
        for axis, y, colour, dx, unit in labelled:
            value = f"{y:.0f}" if y >= 100 else f"{y:.3g}"  # 9.89, not 10
            axis.annotate(f"{value} {unit}", (xs[0], y), xytext=(dx, 0), textcoords="offset points",
                          ha="left" if dx > 0 else "right", va="center", fontsize=8, color=colour)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(lines),
              fontsize=8)  # below the axes: it never covers a point
    # wrapped: a long title (stacks through a shared folder, 2 workers) ran past both edges
    ax.set_title(title_lines(plot_title(rows, x_key)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rows: list[dict[str, Any]], run_info: Mapping[str, Any], out: Path, stem: str,
                 x_key: str) -> Report:
    """Write ``<out>/<stem>.json`` (``run_info``, the best setting by served tiles/s, every
    row), append the rows to ``<out>/results.md`` (header on first use) and plot served and
    bare tiles/s and p95 against ``x_key`` into ``<out>/<stem>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    best = max(rows, key=lambda r: r["served"]["tiles_per_s"])
    result = {**run_info, "best_settings": best["settings"], "rows": rows}
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md = out / "results.md"
    if not md.exists():
        md.write_text(MD_HEADER)
    with md.open("a") as fh:
        fh.writelines(markdown_row(r) for r in rows)
    plot_path = out / f"{stem}.png"
    plot(rows, x_key, plot_path)
    return Report(json_path, md, plot_path, best["settings"])


# --- the command ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; tile size, overlap and micro-batch default to the handler's."""
    p = parser("geoseg bench", __doc__)
    p.add_argument("--model", default="model/geoseg.pt", help="exported TorchScript file")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--users", type=int, nargs="+", default=[1, 4], help="locust user counts")
    p.add_argument("--duration", type=int, default=120, help="seconds per locust run")
    p.add_argument("--warmup", type=at_least(0), default=20,
                   help="seconds of load before the measured runs, not counted (the frontend's "
                        "JIT compiles its request path meanwhile; 0: none)")
    p.add_argument("--client-processes", type=int, default=1,
                   help="locust processes (--processes): more when the client saturates a core")
    p.add_argument("--images", choices=("tiles", "scenes", "mixed", "stacks"), default="tiles",
                   help="generated image set: 512x512 tiles, 2048x1536 scenes, both, or stacks "
                        "of --stack tiles per request (--format npy)")
    p.add_argument("--stack", type=int, default=16, help="tiles per request of --images stacks")
    p.add_argument("--image-count", type=int, default=4, help="images of each size")
    p.add_argument("--format", choices=FORMATS, default="png",
                   help="request format: png, or npy (the bulk format: raw pixels in, class ids "
                        "out; no Flask peer row, the peer takes images only)")
    p.add_argument("--shared", action="store_true",
                   help="send each request's bytes and get its answer through a shared folder "
                        "(handler.shared; under /dev/shm): the body is empty, the frontend "
                        "copies no pixels; no Flask peer row")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="handler and bare model (fp16 on CUDA only)")
    shipped = ServeSettings()
    p.add_argument("--batch-size", type=int, default=shipped.batch_size,
                   help="TorchServe batchSize (default: model/model-config.yaml's)")
    p.add_argument("--max-batch-delay", type=int, default=shipped.max_batch_delay_ms,
                   help="TorchServe maxBatchDelay, ms (default: model/model-config.yaml's)")
    p.add_argument("--workers", type=int, default=shipped.workers, help="TorchServe workers")
    p.add_argument("--tile-batch", type=int, default=HANDLER_DEFAULTS.tile_batch_size,
                   help="handler tiles per forward pass")
    p.add_argument("--tile", type=int, default=HANDLER_DEFAULTS.tile_size, help="tile side, pixels")
    p.add_argument("--overlap", type=int, default=HANDLER_DEFAULTS.tile_overlap,
                   help="tile overlap, pixels")
    p.add_argument("--no-channels-last", action="store_true",
                   help="NCHW input (handler and bare model alike)")
    p.add_argument("--no-peer", action="store_true", help="skip the Flask peer")
    p.add_argument("--sweep", action="store_true",
                   help="try every combination of the --batch-sizes/--delays/--worker-counts/"
                        "--tile-batches lists (first --users value) and report the best")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--delays", type=int, nargs="+", default=[10, 100])
    p.add_argument("--worker-counts", type=int, nargs="+", default=[1])
    p.add_argument("--tile-batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--out", default="benchmarks/results", help="folder for result files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as the handler does, so bare and served run alike
    args = parse_args(argv)
    model_path = Path(args.model).resolve()
    if not model_path.is_file():
        return fail(f"{args.model} not found (make export)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return fail("--device cuda, but CUDA is not available here")
    if not 0 <= 2 * args.overlap <= args.tile:
        return fail(f"--overlap must be at most half of --tile ({args.overlap} > {args.tile} / 2)")
    if args.images == "stacks" and args.format != "npy":
        return fail("--images stacks needs --format npy (a stack is one 4-D .npy array)")
    grid = settings_grid(args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="geoseg-bench-"))
    device = device_name(torch.device(args.device))
    stacked = f" of {args.stack}" if args.images == "stacks" else ""
    images = f"{args.images}{stacked} ({args.format}{', shared folder' if args.shared else ''})"
    labels = {"date": stamp, "device": device, "arch": load_artifact(model_path, "cpu").meta.get("arch"),
              "images": images}
    manifest = write_image_set(workdir / "images", args.images, args.image_count,
                               tile=args.tile, overlap=args.overlap, fmt=args.format,
                               stack=args.stack)
    rows: list[dict[str, Any]] = []
    try:
        peer = None if args.no_peer or args.shared or args.format != "png" else peer_load(model_path, args.device, manifest, grid.users,
                                                  args.duration, workdir, args.client_processes)
        for k, settings in enumerate(grid.settings):
            print(f"[{k + 1}/{len(grid.settings)}] {settings}", flush=True)
            rows += run_setting(model_path, args.device, settings, manifest, grid.users,
                                args.duration, workdir / f"setting{k}", peer, labels,
                                args.client_processes, args.warmup)
    except (ServerError, RuntimeError) as exc:  # the servers' logs stay for a look
        return fail(f"{exc} (logs in {workdir})", 1)
    shutil.rmtree(workdir, ignore_errors=True)  # generated images, archives, server logs
    run_info = {"date": stamp, "device": device, "model": str(args.model), "arch": labels["arch"],
                "torch": torch.__version__, "images": images, "sweep": args.sweep,
                "warmup_s": args.warmup, "worker_env": worker_env(), "frontend_logging": LOG_CONFIG.name}
    report = write_report(rows, run_info, Path(args.out), f"{stamp}-{args.device.split(':')[0]}",
                          "batch_size" if args.sweep else "users")
    print(f"wrote {report.json}, {report.plot}, rows in {report.markdown}; "
          f"best: {report.best_settings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
