"""The GPU run in one command: export, bare sweep, handler in-process, served sweep.

On a machine with CUDA this

1. exports a DeepLabV3-ResNet50 (random weights: throughput does not depend on them) through
   the same scripting and parity check as ``model.export``;
2. sweeps the bare exported model: precision (fp32 / fp16 / bf16) x channels_last on/off x
   batch size, replays of a captured CUDA graph of the best setting (fixed shapes), and the
   network rebuilt and compiled with ``torch.compile`` at that setting (``model.compiled``);
3. runs the handler's own batched path in-process (decode, pooled tiling, model, encode) for a
   TorchServe batch of requests, with the time of each stage per tile: PNG requests decoded by
   one thread and by a pool (``decode_threads``), and the ``.npy`` bulk format;
4. serves the archive through a real TorchServe for each setting of workers x ``batchSize``
   and loads it with locust at several user counts, with PNG tiles and with the ``.npy`` bulk
   format (needs Java and TorchServe);

and writes ``<out>/gpu-<stamp>.json``, a markdown table ``<out>/gpu-<stamp>.md`` and a plot.
``--dry-run`` does the same on the CPU with a MobileNetV3, 64-pixel tiles and one short
served setting, so the test suite keeps the command from rotting.

    python -m benchmarks.gpu --out benchmarks/results
    python -m benchmarks.gpu --dry-run --out /tmp/gpu-dry
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks.images import write_image_set
from benchmarks.model_throughput import DTYPES, count_flops, device_name, matmul_ceiling, measure, synchronize
from benchmarks.run import ServeSettings, failure_summary, serve_and_load
from handler.encode import encode
from handler.inference import CUDA_WAITS, HandlerConfig, config_predictor, lone_tile_predictor, warm_up
from handler.tiling import segment_images
from model.artifact import load_artifact
from model.builder import build_model
from model.class_table import ClassTable
from model.compiled import checked_compile
from model.export import export_model
from tools.server import ServerError, java_problem, torchserve_executable, worker_env


@dataclass(frozen=True)
class GpuPlan:
    """What one run measures. Sizes in pixels, durations in seconds."""

    device: str = "cuda"
    arch: str = "deeplabv3_resnet50"
    tile: int = HandlerConfig().tile_size
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    channels_last: tuple[bool, ...] = (False, True)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    cuda_graphs: bool = True
    compile_backend: str = "inductor"   # torch.compile of the rebuilt eager network ("" = skip)
    warmup: int = 3
    repeats: int = 10
    handler_requests: int = 32          # requests in the in-process handler batch
    handler_tile_batch: int = 32
    decode_threads: int = 8             # the pooled-decode row of the handler stage
    served_precision: str = "fp16"      # the handler's half_precision on CUDA
    served_workers: tuple[int, ...] = (1, 2, 4)
    served_batch_sizes: tuple[int, ...] = (8, 16, 32)
    served_users: tuple[int, ...] = (16, 64, 128)
    served_delay_ms: int = 5
    served_duration: int = 20
    served_warmup: int = 20             # seconds of uncounted load first (the frontend's JIT)
    served_client_processes: int = 4    # locust processes: one Python client tops out near a core
    served_grid: str = "cross"          # "cross": workers x batch sizes; "star": see served_settings
    served_formats: tuple[str, ...] = ("png", "npy")  # request formats of the served rows;
    # "stack": stack_size tiles per request (the bulk format's 4-D .npy); a "-shared" suffix
    # ("stack-shared"): the requests' bytes and answers through a shared folder (handler.shared)
    stack_size: int = 16
    served_decode_threads: tuple[int, ...] = (1,)     # handler decode_threads of the served rows
    served_cuda_waits: tuple[str, ...] = (HandlerConfig().cuda_wait,)  # handler cuda_wait: block, spin
    image_count: int = 8

    @property
    def overlap(self) -> int:
        """Tile overlap in pixels: the handler's at its tile size, in proportion for others."""
        handler = HandlerConfig()
        return handler.tile_overlap * self.tile // handler.tile_size

    @classmethod
    def dry(cls) -> GpuPlan:
        """CPU, tiny: every stage runs in a few seconds. The compiled row compiles with
    ``aot_eager`` (the graph capture and the rebuilt network, without TorchInductor's code
    generation, which takes minutes on a small CPU)."""
        return cls(device="cpu", arch="deeplabv3_mobilenet_v3_large", tile=64,
                   precisions=("fp32",), channels_last=(True,), batch_sizes=(1, 2),
                   cuda_graphs=False, compile_backend="aot_eager", warmup=1, repeats=2,
                   handler_requests=2,
                   handler_tile_batch=2, decode_threads=2, served_precision="fp32", served_workers=(1,),
                   served_batch_sizes=(2,), served_users=(2,), served_delay_ms=5,
                   served_duration=3, served_warmup=1, served_client_processes=2, image_count=2,
                   served_formats=("png", "npy", "stack", "stack-shared"), stack_size=2)


def export_random_model(arch: str, path: Path, seed: int = 0) -> dict[str, Any]:
    """Script a randomly initialised ``arch`` (5 LandCover.ai classes) and save it as an export."""
    torch.manual_seed(seed)
    table = ClassTable.load()
    model = build_model(arch, num_classes=len(table.names), pretrained="none").eval()
    diff = export_model(model, table, arch, path, {"weights": "random (benchmark only)"}, 64)
    return {"arch": arch, "path": path.name, "parity_max_abs": diff,
            "megabytes": path.stat().st_size / 2 ** 20}


def _event_times(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup``, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


def measure_cuda_graph(model: torch.nn.Module, precision: str, channels_last: bool,
                       batch_size: int, tile: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Tiles/s of replaying one captured graph of forward + argmax on a fixed (B, 3, t, t) input.

    The handler would run fixed micro-batch shapes for this (the last one padded).
    """
    dtype = DTYPES[precision]
    net = model.to(device="cuda", dtype=dtype)
    x = torch.rand(batch_size, 3, tile, tile, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            net(x)["out"].argmax(1)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = net(x)["out"].argmax(1)
    with torch.inference_mode():
        eager = net(x)["out"].argmax(1)
    graph.replay()
    torch.cuda.synchronize()
    agree = float((static_out == eager).float().mean())
    times = _event_times(graph.replay, warmup, repeats)
    median = statistics.median(times)
    return {"precision": precision, "channels_last": channels_last, "batch_size": batch_size,
            "seconds_median": median, "seconds_min": min(times), "seconds_max": max(times),
            "tiles_per_s": batch_size / median, "argmax_agreement_with_eager": agree}


def bare_sweep(model_path: Path, plan: GpuPlan, log: Callable[[str], None]) -> dict[str, Any]:
    """Every precision x memory format x batch size of the plan, plus CUDA-graph replays."""
    device = torch.device(plan.device)
    model = load_artifact(model_path, "cpu").network
    flops = count_flops(model, plan.tile)
    ceilings = {p: matmul_ceiling(device, DTYPES[p], size=4096 if device.type == "cuda" else 512)
                for p in plan.precisions}
    log(f"{flops / 1e9:.1f} GFLOP per {plan.tile} tile; matmul ceiling "
        + ", ".join(f"{p} {c / 1e12:.1f} TFLOP/s" for p, c in ceilings.items()))
    rows = []
    for precision in plan.precisions:
        for cl in plan.channels_last:
            for bs in plan.batch_sizes:
                m = measure(model, device, precision, cl, bs, plan.tile, flops,
                            ceilings[precision], plan.warmup, plan.repeats)
                rows.append(asdict(m))
                log(f"bare {precision} channels_last={str(cl).lower():<5} batch {bs:>3}: "
                    f"{m.tiles_per_s:9.1f} tiles/s  {m.achieved_tflops:7.1f} TFLOP/s "
                    f"({100 * m.fraction_of_ceiling:3.0f}% of matmul)  "
                    f"[{m.seconds_min * 1e3:.1f}, {m.seconds_max * 1e3:.1f}] ms/batch")
    best = max(rows, key=lambda r: r["tiles_per_s"])
    graphs = []
    if plan.cuda_graphs and device.type == "cuda":
        for bs in sorted({1, 8, best["batch_size"]}):
            try:
                g = measure_cuda_graph(model, best["precision"], best["channels_last"], bs,
                                       plan.tile, plan.warmup, plan.repeats)
            except RuntimeError as exc:  # capture is not guaranteed for every scripted graph
                g = {"batch_size": bs, "error": str(exc).splitlines()[0]}
            graphs.append(g)
            log(f"cuda graph batch {bs}: " + (f"{g['tiles_per_s']:.1f} tiles/s, argmax agreement "
                                              f"{g['argmax_agreement_with_eager']:.6f}"
                                              if "error" not in g else g["error"]))
    return {"gflop_per_tile": flops / 1e9,
            "matmul_ceiling_tflops": {p: c / 1e12 for p, c in ceilings.items()},
            "best": best, "measurements": rows, "cuda_graphs": graphs, "compiled": None}


def measure_compiled(model_path: Path, plan: GpuPlan, bare: dict[str, Any],
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The export rebuilt as an eager network and ``torch.compile``d (``plan.compile_backend``)
    at the best bare setting: seconds to compile, tiles/s against the TorchScript row of the
    same setting, and the share of pixels whose class id agrees with TorchScript's on a
    random batch. ``bare``: :func:`bare_sweep`'s report."""
    device = torch.device(plan.device)
    best, flops = bare["best"], bare["gflop_per_tile"] * 1e9
    ceiling = bare["matmul_ceiling_tflops"][best["precision"]] * 1e12
    dtype = DTYPES[best["precision"]]
    artifact = load_artifact(model_path, "cpu")
    scripted = artifact.network.to(device=device, dtype=dtype)
    try:
        started = time.perf_counter()
        net, agreement = checked_compile(artifact, scripted, plan.compile_backend, device, dtype,
                                         best["channels_last"], best["batch_size"], plan.tile)
        compile_s = time.perf_counter() - started
        m = measure(net, device, best["precision"], best["channels_last"], best["batch_size"],
                    plan.tile, flops, ceiling, plan.warmup, plan.repeats)
    except Exception as exc:  # noqa: BLE001 (a backend that fails is a row, not a crashed run)
        log(f"compiled ({plan.compile_backend}): {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return {"backend": plan.compile_backend, "error": f"{type(exc).__name__}: {exc}"[:300]}
    log(f"compiled ({plan.compile_backend}) {best['precision']} batch {best['batch_size']}: "
        f"{m.tiles_per_s:.1f} tiles/s against {best['tiles_per_s']:.1f} TorchScript "
        f"({m.tiles_per_s / best['tiles_per_s']:.2f}x), compiled in {compile_s:.0f} s, argmax "
        f"agreement {agreement:.6f}")
    return {"backend": plan.compile_backend, **asdict(m), "compile_seconds": compile_s,
            "torchscript_tiles_per_s": best["tiles_per_s"],
            "speedup": m.tiles_per_s / best["tiles_per_s"],
            "argmax_agreement_with_torchscript": agreement}


HANDLER_VARIANTS = (("png", 1), ("png", 0), ("npy", 1))
"""(request format, decode threads) of the in-process handler rows; 0 = the plan's
``decode_threads``."""


def handler_batch_profile(model_path: Path, plan: GpuPlan, repeats: int = 5) -> dict[str, Any]:
    """One TorchServe batch of ``handler_requests`` tile requests through the handler's
    functions in one process, for each of :data:`HANDLER_VARIANTS` (PNG decoded by one thread,
    PNG by ``plan.decode_threads``, the ``.npy`` bulk format): ms per tile for decode, tiling +
    model, encode (median of ``repeats`` after one warm-up), and the tiles/s one worker can
    reach this way."""
    from benchmarks.decode_threads import bodies
    from handler.batch import decode_pool, prepare_jobs
    from handler.request import Job

    device = torch.device(plan.device)
    artifact = load_artifact(model_path, device)
    model, table = artifact.network, artifact.classes
    half = plan.served_precision == "fp16" and device.type == "cuda"
    if half:
        model = model.half()
    config = HandlerConfig(tile_size=plan.tile, tile_overlap=plan.overlap,
                           tile_batch_size=plan.handler_tile_batch, half_precision=half)
    predict = config_predictor(model, device, config)  # as served: blended scores,
    lone = lone_tile_predictor(model, device, config)   # ids on the device for lone tiles
    warm_up(predict, plan.handler_tile_batch, plan.tile)  # the same network for both
    rows = []
    for fmt, threads in HANDLER_VARIANTS:
        threads = threads or plan.decode_threads
        requests = [{"body": b} for b in bodies(fmt, plan.tile, plan.handler_requests)]
        pool = decode_pool(threads)
        stages: dict[str, list[float]] = {"decode": [], "model": [], "encode": []}
        for k in range(repeats + 1):
            t0 = time.perf_counter()
            jobs = prepare_jobs(requests, lambda i, n: None, 10 ** 9, None, pool)
            images = [j.image.rgb for j in jobs if isinstance(j, Job)]
            t1 = time.perf_counter()
            maps = segment_images(images, predict, plan.tile, plan.overlap,
                                  plan.handler_tile_batch, lone_ids=lone)
            synchronize(device)
            t2 = time.perf_counter()
            for m, img in zip(maps, images):
                encode(fmt, m, img, table, None)
            t3 = time.perf_counter()
            if k:
                for name, a, b in zip(stages, (t0, t1, t2), (t1, t2, t3)):
                    stages[name].append(b - a)
        if pool is not None:
            pool.shutdown()
        n = plan.handler_requests
        per_tile = {name: 1000 * statistics.median(v) / n for name, v in stages.items()}
        total = sum(per_tile.values())
        rows.append({"format": fmt, "decode_threads": threads, "ms_per_tile": per_tile,
                     "ms_per_tile_total": total, "tiles_per_s_one_worker": 1000 / total,
                     "host_ms_per_tile": per_tile["decode"] + per_tile["encode"]})
    return {"requests_per_batch": plan.handler_requests, "tile_batch": plan.handler_tile_batch,
            "precision": plan.served_precision, "rows": rows}


SHARED_SUFFIX = "-shared"
"""A served format's suffix for requests through a shared folder (``stack-shared``)."""


def served_settings(plan: GpuPlan) -> list[ServeSettings]:
    """The served grid: every workers x batchSize pair ("cross"), or ("star") every worker
    count at the middle batch size plus every batch size at the middle worker count; each
    with every ``served_decode_threads`` and every ``served_cuda_waits``."""
    def one(workers: int, batch: int, threads: int, wait: str) -> ServeSettings:
        return ServeSettings(batch_size=batch, max_batch_delay_ms=plan.served_delay_ms,
                             workers=workers, tile_batch=batch, precision=plan.served_precision,
                             tile=plan.tile, overlap=plan.overlap, decode_threads=threads,
                             cuda_wait=wait)
    if plan.served_grid == "cross":
        pairs = [(w, b) for w in plan.served_workers for b in plan.served_batch_sizes]
    else:
        mid_b = plan.served_batch_sizes[len(plan.served_batch_sizes) // 2]
        mid_w = plan.served_workers[len(plan.served_workers) // 2]
        pairs = [(w, mid_b) for w in plan.served_workers]
        pairs += [(mid_w, b) for b in plan.served_batch_sizes if (mid_w, b) not in pairs]
    return [one(w, b, t, c) for w, b in pairs for t in plan.served_decode_threads
            for c in plan.served_cuda_waits]


def served_sweep(model_path: Path, plan: GpuPlan, bare_best_tiles_per_s: float, workdir: Path,
                 log: Callable[[str], None],
                 progress: Callable[[dict[str, Any]], None] = lambda result: None
                 ) -> dict[str, Any]:
    """Locust against a real TorchServe for each setting; served / bare per row.
    ``progress`` gets the result so far after each setting (to save it as it grows)."""
    for reason in (java_problem(), None if torchserve_executable() else "no torchserve on PATH"):
        if reason:
            return {"skipped": reason, "rows": []}
    manifests = {}
    for fmt in plan.served_formats:
        base = fmt.removesuffix(SHARED_SUFFIX)
        kind, file_format = ("stacks", "npy") if base == "stack" else ("tiles", base)
        manifests[fmt] = write_image_set(workdir / f"images-{fmt}", kind, plan.image_count,
                                         tile=plan.tile, overlap=plan.overlap, fmt=file_format,
                                         tile_side=plan.tile, stack=plan.stack_size)  # one tile an image
    rows: list[dict[str, Any]] = []
    result = {"bare_best_tiles_per_s": bare_best_tiles_per_s, "rows": rows}
    for k, settings in enumerate(served_settings(plan)):
        for fmt, manifest in manifests.items():
            if fmt.removesuffix(SHARED_SUFFIX) in ("npy", "stack") and settings.decode_threads > 1:
                continue  # nothing to decode in parallel (benchmarks.decode_threads: 0.08 ms)
            served = replace(settings, shared=fmt.endswith(SHARED_SUFFIX))
            log(f"served [{k + 1}] {fmt}: workers {settings.workers} batchSize "
                f"{settings.batch_size} delay {settings.max_batch_delay_ms} ms tile batch "
                f"{settings.tile_batch} decode threads {settings.decode_threads} CUDA wait "
                f"{settings.cuda_wait}")
            try:
                loads = serve_and_load(model_path, plan.device, served, manifest,
                                       list(plan.served_users), plan.served_duration,
                                       workdir / f"served{k}-{fmt}", plan.served_client_processes,
                                       plan.served_warmup)
            except (ServerError, RuntimeError) as exc:
                rows.append({"settings": asdict(served), "format": fmt, "error": str(exc)})
                log(f"  error: {exc}")
                continue
            for load in loads:
                ratio = load["tiles_per_s"] / bare_best_tiles_per_s if bare_best_tiles_per_s else 0.0
                rows.append({"settings": asdict(served), "format": fmt, "served": load,
                             "served_over_bare": ratio})
                log(f"  users {load['users']:>4}: {load['tiles_per_s']:8.1f} tiles/s "
                    f"(served / bare {ratio:.3f}), p50 {load['p50_ms']:.0f} ms, "
                    f"p95 {load['p95_ms']:.0f} ms, {failure_summary(load)}")
            progress(result)
    return result


def markdown(report: dict[str, Any]) -> str:
    """The result tables: bare sweep, CUDA graphs, handler stages, served sweep."""
    lines = [f"# GPU run {report['date']}: {report['arch']} on {report['device']}",
             "", f"torch {report['torch']}; {report['bare']['gflop_per_tile']:.1f} GFLOP per "
             f"{report['plan']['tile']} tile; matmul ceiling "
             + ", ".join(f"{p} {v:.0f} TFLOP/s"
                         for p, v in report['bare']['matmul_ceiling_tflops'].items()), "",
             "## Bare model (TorchScript export, forward + argmax)", "",
             "| precision | channels_last | batch | tiles/s | ms/batch median [min, max] | TFLOP/s | of matmul |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for m in report["bare"]["measurements"]:
        lines.append(f"| {m['precision']} | {str(m['channels_last']).lower()} | {m['batch_size']} "
                     f"| {m['tiles_per_s']:.1f} | {m['seconds_median'] * 1e3:.2f} "
                     f"[{m['seconds_min'] * 1e3:.2f}, {m['seconds_max'] * 1e3:.2f}] "
                     f"| {m['achieved_tflops']:.1f} | {100 * m['fraction_of_ceiling']:.0f}% |")
    if report["bare"]["cuda_graphs"]:
        lines += ["", "## CUDA graph replays (best precision and format)", "",
                  "| batch | tiles/s | ms/batch median | argmax agreement with eager |",
                  "| ---: | ---: | ---: | ---: |"]
        for g in report["bare"]["cuda_graphs"]:
            lines.append(f"| {g['batch_size']} | " + (
                f"{g['tiles_per_s']:.1f} | {g['seconds_median'] * 1e3:.2f} | "
                f"{g['argmax_agreement_with_eager']:.6f} |" if "error" not in g
                else f"error: {g['error']} | | |"))
    c = report["bare"].get("compiled")
    if c:
        lines += ["", f"## Compiled network (torch.compile, {c['backend']}; best bare setting)", ""]
        lines += [f"error: {c['error']}"] if "error" in c else [
            "| precision | batch | tiles/s | TorchScript tiles/s | speed-up | compile s "
            "| argmax agreement with TorchScript |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {c['precision']} | {c['batch_size']} | {c['tiles_per_s']:.1f} | "
            f"{c['torchscript_tiles_per_s']:.1f} | {c['speedup']:.2f}x | {c['compile_seconds']:.0f} | "
            f"{c['argmax_agreement_with_torchscript']:.6f} |"]
    h = report.get("handler")
    if h:
        lines += ["", f"## Handler in-process: one batch of {h['requests_per_batch']} tile "
                  f"requests ({h['precision']}, tile batch {h['tile_batch']}), ms per tile", "",
                  "| request format | decode threads | decode | tiling + model | encode | total "
                  "| one worker, tiles/s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in h["rows"]:
            t = r["ms_per_tile"]
            lines.append(f"| {r['format']} | {r['decode_threads']} | {t['decode']:.2f} | "
                         f"{t['model']:.2f} | {t['encode']:.2f} | {r['ms_per_tile_total']:.2f} | "
                         f"{r['tiles_per_s_one_worker']:.0f} |")
    served = report.get("served") or {}
    if served.get("skipped"):
        lines += ["", f"Served sweep skipped: {served['skipped']}"]
    elif served.get("rows"):
        lines += ["", f"## Served (TorchServe + locust; bare best "
                  f"{served['bare_best_tiles_per_s']:.1f} tiles/s)", "",
                  "| format | decode threads | CUDA wait | workers | batchSize | delay ms | users "
                  "| tiles/s | served ÷ bare | p50 ms | p95 ms | failures |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| ---: |"]
        for r in served["rows"]:
            s = r["settings"]
            fmt = (f"{r.get('format', 'png')} | {s.get('decode_threads', 1)} "
                   f"| {s.get('cuda_wait', 'spin')}")
            if "error" in r:
                lines.append(f"| {fmt} | {s['workers']} | {s['batch_size']} | {s['max_batch_delay_ms']} "
                             f"| | error: {r['error'][:80]} | | | | |")
                continue
            v = r["served"]
            lines.append(f"| {fmt} | {s['workers']} | {s['batch_size']} | {s['max_batch_delay_ms']} "
                         f"| {v['users']} | {v['tiles_per_s']:.1f} | {r['served_over_bare']:.3f} "
                         f"| {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {v['failures']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Bare tiles/s against batch size per precision/format; served rows as bars on the right,
    against the bare best and 0.9 of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained",
                                  gridspec_kw={"width_ratios": (1, 1.3)})
    keys = sorted({(m["precision"], m["channels_last"]) for m in report["bare"]["measurements"]})
    for p, cl in keys:
        ms = [m for m in report["bare"]["measurements"]
              if m["precision"] == p and m["channels_last"] == cl]
        ax.plot([m["batch_size"] for m in ms], [m["tiles_per_s"] for m in ms], "o-",
                label=f"{p}{' channels_last' if cl else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("tiles / s")
    ax.set_title(f"bare {report['arch']} on {report['device']}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_ylim(0, 1.1 * max(m["tiles_per_s"] for m in report["bare"]["measurements"]))
    rows = [r for r in (report.get("served") or {}).get("rows", []) if "served" in r]
    stack = f"stack of {report['plan'].get('stack_size', 16)}"
    labels = [f"{r.get('format', 'png').replace('stack', stack).replace(SHARED_SUFFIX, ', shared')}, "
              f"{r['settings']['workers']} worker{'s' if r['settings']['workers'] != 1 else ''} x "
              f"{r['settings']['batch_size']}, {r['settings'].get('decode_threads', 1)} decode "
              f"thr., {r['served']['users']} users"
              f"{', blocking wait' if r['settings'].get('cuda_wait') == 'block' else ''}"
              for r in rows]
    values = [r["served"]["tiles_per_s"] for r in rows]
    palette = {"npy": "tab:blue", "stack": "tab:purple", "stack-shared": "tab:orange",
               "npy-shared": "tab:cyan"}
    colours = [palette.get(r.get("format", "png"), "tab:green") for r in rows]
    bars = ax2.barh(range(len(rows)), values, color=colours)
    ax2.bar_label(bars, fmt="%.0f", padding=3, fontsize=7)
    ax2.set_yticks(range(len(rows)), labels, fontsize=7)
    ax2.invert_yaxis()
    if rows:
        bare = report["served"]["bare_best_tiles_per_s"]
        ax2.axvline(bare, color="k", ls="--", label=f"bare best {bare:.0f}")
        ax2.axvline(0.9 * bare, color="k", ls=":", label="0.9 x bare")
        ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    ax2.set_xlabel("served tiles / s")
    ax2.set_title("served through TorchServe (npy blue, stacks purple, PNG green;\n"
                  "through a shared folder: stacks orange, npy cyan)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(plan: GpuPlan, out: Path, stages: tuple[str, ...], log: Callable[[str], None] = print
        ) -> dict[str, Any]:
    """Every stage of ``plan`` that ``stages`` names; writes JSON, markdown and plot into ``out``."""
    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available here (use --dry-run on a CPU)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="geoseg-gpu-"))
    model_path = workdir / f"geoseg-{plan.arch}.pt"
    report: dict[str, Any] = {"date": stamp, "device": device_name(torch.device(plan.device)),
                              "arch": plan.arch, "torch": torch.__version__, "plan": asdict(plan),
                              "worker_env": worker_env(),
                              "export": export_random_model(plan.arch, model_path)}
    log(f"exported {plan.arch} ({report['export']['megabytes']:.0f} MB) on {report['device']}")
    out.mkdir(parents=True, exist_ok=True)
    kind = "gpu" if plan.device.startswith("cuda") else "gpu-dry"
    base = out / f"{kind}-{stamp}"

    def save() -> None:  # after every stage: a run cut short keeps what it measured
        Path(f"{base}.json").write_text(json.dumps(report, indent=2) + "\n")
        Path(f"{base}.md").write_text(markdown(report))

    report["bare"] = bare_sweep(model_path, plan, log)
    save()
    if "handler" in stages:
        report["handler"] = handler_batch_profile(model_path, plan)
        for row in report["handler"]["rows"]:
            log(f"handler in-process, {row['format']} x {row['decode_threads']} decode threads, "
                "ms/tile: " + ", ".join(f"{k} {v:.2f}" for k, v in row["ms_per_tile"].items())
                + f"; one worker {row['tiles_per_s_one_worker']:.0f} tiles/s")
        save()
    if "served" in stages:
        best_served_precision = max(
            (m for m in report["bare"]["measurements"]
             if m["precision"] == plan.served_precision and m["channels_last"]),
            key=lambda m: m["tiles_per_s"], default=report["bare"]["best"])
        def served_so_far(result: dict[str, Any]) -> None:
            report["served"] = result
            save()

        report["served"] = served_sweep(model_path, plan, best_served_precision["tiles_per_s"],
                                        workdir, log, served_so_far)
        save()
    if "compiled" in stages and plan.compile_backend:  # last: TorchInductor takes minutes
        report["bare"]["compiled"] = measure_compiled(model_path, plan, report["bare"], log)
    save()
    plot(report, Path(f"{base}.png"))
    log(f"wrote {base}.json, .md, .png")
    shutil.rmtree(workdir, ignore_errors=True)  # the export, images and server logs (kept on error)
    return report


STAGES = ("bare", "handler", "served", "compiled")
"""The GPU run's stages, in the order they run (the compiled network last: TorchInductor's
compilation of a ResNet-50 takes minutes)."""


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _cuda_waits(text: str) -> tuple[str, ...]:
    values = _words(text)
    unknown = [v for v in values if v not in CUDA_WAITS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give {' or '.join(CUDA_WAITS)}, "
                                         "or both with a comma")
    return values


def _switches(text: str) -> tuple[bool, ...]:
    return tuple({"on": True, "off": False}[v] for v in _words(text))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results", help="folder for the result files")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the code path")
    p.add_argument("--stages", default=",".join(STAGES),
                   help="comma list of " + ", ".join(STAGES) + " (bare always runs)")
    p.add_argument("--arch", default=None, help="override the plan's architecture")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="bare sweep, e.g. 1,8,32")
    p.add_argument("--served-workers", type=_ints, default=None, help="e.g. 1,2,4")
    p.add_argument("--served-batch-sizes", type=_ints, default=None, help="e.g. 8,16,32")
    p.add_argument("--served-users", type=_ints, default=None, help="e.g. 16,64,128")
    p.add_argument("--served-duration", type=int, default=None, help="seconds per locust run")
    p.add_argument("--served-warmup", type=int, default=None,
                   help="seconds of uncounted load before a server's measured runs")
    p.add_argument("--served-grid", choices=("cross", "star"), default=None)
    p.add_argument("--precisions", type=_words, default=None, help="bare sweep, e.g. fp16,bf16")
    p.add_argument("--channels-last", type=_switches, default=None,
                   help="bare sweep memory formats: on, off or on,off")
    p.add_argument("--served-formats", type=_words, default=None,
                   help="e.g. png,npy (stack: 16 tiles per request, one 4-D .npy; a -shared "
                        "suffix, stack-shared: through a shared folder, handler.shared)")
    p.add_argument("--served-decode-threads", type=_ints, default=None,
                   help="handler decode_threads of the served PNG rows, e.g. 1,4")
    p.add_argument("--served-cuda-wait", type=_cuda_waits, default=None,
                   help="handler cuda_wait of the served rows: block (asleep on a CUDA event), "
                        "spin (CUDA's default wait), or block,spin")
    args = p.parse_args(argv)
    plan = GpuPlan.dry() if args.dry_run else GpuPlan()
    overrides = {k: v for k, v in {
        "arch": args.arch, "batch_sizes": args.batch_sizes, "served_workers": args.served_workers,
        "served_batch_sizes": args.served_batch_sizes, "served_users": args.served_users,
        "served_duration": args.served_duration, "served_warmup": args.served_warmup,
        "served_grid": args.served_grid,
        "precisions": args.precisions, "channels_last": args.channels_last,
        "served_formats": args.served_formats,
        "served_decode_threads": args.served_decode_threads,
        "served_cuda_waits": args.served_cuda_wait}.items()
        if v is not None}
    plan = replace(plan, **overrides)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = set(stages) - set(STAGES)
    if unknown:
        print(f"error: unknown stages {sorted(unknown)}", file=sys.stderr)
        return 2
    try:
        run(plan, Path(args.out), stages, lambda s: print(s, flush=True))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
