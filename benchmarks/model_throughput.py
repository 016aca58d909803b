"""Throughput of the exported TorchScript model alone: the ceiling the server is judged against.

For each precision, memory format and batch size: tiles/s and megapixels/s of the network and
the argmax the handler takes (``handler.tiling.first_max_class``; torch's own ``argmax(1)``
over channels-last logits on the CPU cost 45 ms per 512 px tile on top of DeepLabV3-MobileNetV3's
85, and made the ceiling look 1.5x lower than what the server reaches) on square tiles
(median and spread of timed repeats after warm-up), and achieved FLOP/s against the device's
measured matrix-multiply ceiling. FLOPs per tile are counted on the model (torch's
FlopCounterMode), not assumed.

    python -m benchmarks.model_throughput --model model/geoseg.pt --device cpu --batch-sizes 1 2 4
"""
from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.allocator import keep_freed_memory
from common.cli import fail, write_json
from common.cli import parser as cli_parser
from handler.inference import HandlerConfig
from handler.tiling import first_max_class
from model.artifact import load_artifact

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Measurement:
    """One setting's timings. Times in seconds per batch; rates from the median."""

    device: str
    precision: str
    channels_last: bool
    batch_size: int
    tile: int
    repeats: int
    seconds_median: float
    seconds_min: float
    seconds_max: float
    tiles_per_s: float
    megapixels_per_s: float
    gflop_per_tile: float
    achieved_tflops: float
    fraction_of_ceiling: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
              ) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def count_flops(model: torch.nn.Module, tile: int) -> float:
    """FLOPs of one (1, 3, tile, tile) forward pass, counted on CPU in fp32."""
    cpu_model = model.to("cpu").float()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        cpu_model(torch.rand(1, 3, tile, tile))
    return float(counter.get_total_flops())


def matmul_ceiling(device: torch.device, dtype: torch.dtype, size: int = 2048,
                   repeats: int = 5) -> float:
    """Measured FLOP/s of a large square matrix multiply: the device's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = time_call(lambda: a @ b, device, warmup=2, repeats=repeats)
    return 2 * size ** 3 / min(times)


def measure(model: torch.nn.Module, device: torch.device, precision: str, channels_last: bool,
            batch_size: int, tile: int, flops_per_tile: float, ceiling: float,
            warmup: int, repeats: int) -> Measurement:
    dtype = DTYPES[precision]
    net = model.to(device=device, dtype=dtype)
    x = torch.rand(batch_size, 3, tile, tile, device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return first_max_class(net(x)["out"])

    times = time_call(run, device, warmup, repeats)
    median = statistics.median(times)
    tiles_per_s = batch_size / median
    achieved = tiles_per_s * flops_per_tile
    return Measurement(str(device), precision, channels_last, batch_size, tile, repeats,
                       median, min(times), max(times), tiles_per_s,
                       tiles_per_s * tile * tile / 1e6, flops_per_tile / 1e9, achieved / 1e12,
                       achieved / ceiling)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as the handler and geoseg predict do
    parser = cli_parser("python -m benchmarks.model_throughput", __doc__)
    parser.add_argument("--model", default="model/geoseg.pt", help="exported TorchScript file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precisions", nargs="+", default=None, choices=tuple(DTYPES),
                        help="default: fp32 on CPU, fp32 fp16 bf16 on CUDA")
    parser.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=("off", "on"))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--tile", type=int, default=HandlerConfig().tile_size,
                        help="tile side in pixels")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda, but CUDA is not available here")
    if not Path(args.model).is_file():
        return fail(f"{args.model} not found (make export)")
    precisions = args.precisions or (["fp32"] if device.type == "cpu" else ["fp32", "fp16", "bf16"])
    artifact = load_artifact(args.model, "cpu")
    model, meta = artifact.network, artifact.meta
    flops = count_flops(model, args.tile)
    ceilings = {p: matmul_ceiling(device, DTYPES[p]) for p in precisions}
    print(f"{meta.get('arch')}: {flops / 1e9:.1f} GFLOP per {args.tile}x{args.tile} tile on "
          f"{device_name(device)}; matmul ceiling "
          + ", ".join(f"{p} {c / 1e12:.2f} TFLOP/s" for p, c in ceilings.items()), flush=True)
    results = []
    for precision in precisions:
        for cl in args.channels_last:
            for bs in args.batch_sizes:
                m = measure(model, device, precision, cl == "on", bs, args.tile, flops,
                            ceilings[precision], args.warmup, args.repeats)
                results.append(m)
                print(f"{precision} channels_last={cl:<3} batch {bs:>3}: "
                      f"{m.tiles_per_s:8.2f} tiles/s  {m.megapixels_per_s:7.2f} Mpx/s  "
                      f"{m.achieved_tflops:6.3f} TFLOP/s ({100 * m.fraction_of_ceiling:.0f}% of "
                      f"matmul)  batch time median {m.seconds_median:.3f} s "
                      f"[{m.seconds_min:.3f}, {m.seconds_max:.3f}]", flush=True)
    best = max(results, key=lambda r: r.tiles_per_s)
    report = {"model": str(args.model), "arch": meta.get("arch"), "device": device_name(device),
              "torch": torch.__version__, "gflop_per_tile": flops / 1e9,
              "matmul_ceiling_tflops": {p: c / 1e12 for p, c in ceilings.items()},
              "best": asdict(best), "measurements": [asdict(r) for r in results]}
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
