"""What the worker's tile predictor costs around the network, in-process, CPU time per tile.

    python -m benchmarks.predictor_cost --model model/geoseg.pt     # 512 px tiles, 300 rounds

The served predictor of a single-tile request (``handler.inference.lone_tile_predictor`` with
the handler's defaults) does three things: turn the uint8 batch into the network's input
(``network_input``), run the network, and take the first maximum of the logits
(``first_max_class`` over contiguous class planes). ``--softmax`` adds the stage it had until
lone tiles went without it, the softmax of the logits (``class_probabilities``, which blended
tiles still need), with the argmax then taken over the probabilities. Each round times every
one of them once, and the whole predictor once, on the same random micro-batch, in an order that alternates between rounds, so that the
machine's slow spells fall on all of them alike. Times are this process's CPU (every thread:
the network's intra-op threads count) and wall, per tile; median and quartiles over the
rounds. ``around_network_cpu_ms`` is the whole predictor's median less the network's: GeoSeg's
own share of the worker's model stage. ``slow_rounds``: the rounds that took far longer than the
median (:data:`SLOW_ROUND`) and what each stage cost in them, against the other rounds.
Results go to ``benchmarks/results/predictor-cost-cpu.json``.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import RESULTS, cpu_machine
from common.allocator import keep_freed_memory
from common.cli import at_least, fail, parser, write_json
from handler.inference import HandlerConfig, class_probabilities, lone_tile_predictor, network_input, warm_up
from handler.tiling import first_max_class
from model.artifact import load_artifact

STAGES = ("input", "network", "argmax", "whole")
SOFTMAX_STAGES = ("input", "network", "softmax", "argmax", "whole")


def quartiles(values: list[float]) -> dict[str, float]:
    """25th, 50th and 75th percentile of ``values``, rounded to microseconds (ms units)."""
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return {"p25": round(float(p25), 3), "median": round(float(median), 3),
            "p75": round(float(p75), 3)}


def stage_calls(model: torch.nn.Module, config: HandlerConfig, batch: np.ndarray,
                softmax: bool = False) -> dict[str, Callable[[], object]]:
    """One call of each stage of the lone-tile predictor on ``batch`` (B, t, t, 3) uint8, CPU.
    Each stage gets the previous stage's output, computed once beforehand. With ``softmax``
    the softmax stage too, the argmax over its probabilities, and for ``whole`` the three
    stages in a row (the former lone-tile predictor)."""
    cpu = torch.device("cpu")
    predict = lone_tile_predictor(model, cpu, config)
    assert predict is not None, "the lone-tile predictor exists where tiles are blended"
    warm_up(predict, batch.shape[0], batch.shape[1])
    pixels = torch.from_numpy(batch)
    with torch.inference_mode():
        x = network_input(pixels, torch.float32, config.channels_last)
        logits = model(x)["out"]
        probabilities = class_probabilities(logits)

    def in_inference(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return fn()
        return call

    calls = {"input": lambda: network_input(pixels, torch.float32, config.channels_last),
             "network": in_inference(lambda: model(x)["out"]),
             "argmax": in_inference(lambda: first_max_class(logits.contiguous())),
             "whole": lambda: predict(batch)}
    if softmax:
        def with_softmax() -> object:
            with torch.inference_mode():
                scores = model(network_input(pixels, torch.float32, config.channels_last))["out"]
                return first_max_class(class_probabilities(scores)).numpy()

        calls.update(softmax=in_inference(lambda: class_probabilities(logits)),
                     argmax=in_inference(lambda: first_max_class(probabilities)),
                     whole=with_softmax)
    return calls


SLOW_ROUND = 1.8
"""A round is slow when its stages together took this many times their median round."""


def slow_rounds(cpu: dict[str, list[float]], factor: float = SLOW_ROUND) -> dict[str, Any]:
    """The rounds whose parts (input, network, [softmax,] argmax: ``cpu`` ms, a value per round
    for each stage) together took more than ``factor`` times the median round, and each
    stage's median CPU ms in those rounds and in the others: which stages a slow spell slows."""
    parts = np.sum([v for s, v in cpu.items() if s != "whole"], axis=0)
    slow = parts > factor * np.median(parts)

    def median(values: list[float], rounds: np.ndarray) -> float | None:
        picked = np.asarray(values)[rounds]
        return round(float(np.median(picked)), 3) if picked.size else None

    return {"factor": factor, "share": round(float(slow.mean()), 4),
            "cpu_ms_per_tile": {s: {"other_rounds": median(v, ~slow), "slow_rounds": median(v, slow)}
                                for s, v in cpu.items()}}


def measure(model_path: Path, tile: int, micro_batch: int, rounds: int,
            softmax: bool = False) -> dict[str, Any]:
    """Per-tile CPU and wall milliseconds of every stage over ``rounds`` alternating rounds
    (``softmax``: the former lone-tile predictor, see :func:`stage_calls`)."""
    config = HandlerConfig(tile_size=tile, tile_batch_size=micro_batch)
    batch_size = config.micro_batch("cpu")
    model = load_artifact(model_path, "cpu").network
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, tile, tile, 3), np.uint8)
    calls = stage_calls(model, config, batch, softmax)
    stages = SOFTMAX_STAGES if softmax else STAGES
    cpu: dict[str, list[float]] = {s: [] for s in stages}
    wall: dict[str, list[float]] = {s: [] for s in stages}
    for r in range(rounds):
        for stage in stages if r % 2 == 0 else reversed(stages):
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            calls[stage]()
            cpu[stage].append(1000 * (time.process_time() - cpu_start) / batch_size)
            wall[stage].append(1000 * (time.perf_counter() - wall_start) / batch_size)
    cpu_ms = {s: quartiles(v) for s, v in cpu.items()}
    return {"tile": tile, "micro_batch": batch_size, "rounds": rounds, "softmax": softmax,
            "torch_threads": torch.get_num_threads(),
            "cpu_ms_per_tile": cpu_ms,
            "wall_ms_per_tile": {s: quartiles(v) for s, v in wall.items()},
            "around_network_cpu_ms": round(cpu_ms["whole"]["median"]
                                           - cpu_ms["network"]["median"], 3),
            "slow_rounds": slow_rounds(cpu)}


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as the worker does
    p = parser("python -m benchmarks.predictor_cost", __doc__)
    p.add_argument("--model", type=Path, default=Path("model/geoseg.pt"),
                   help="exported model (a stand-in: tests.standins.write_standin)")
    p.add_argument("--tile", type=at_least(16), default=HandlerConfig().tile_size,
                   help="tile side in pixels")
    p.add_argument("--micro-batch", type=at_least(0), default=0,
                   help="tiles per forward pass (0: the handler's CPU default)")
    p.add_argument("--rounds", type=at_least(1), default=300, help="timed rounds")
    p.add_argument("--threads", type=at_least(0), default=0,
                   help="torch intra-op threads (0: torch's default, as in the worker)")
    p.add_argument("--softmax", action="store_true",
                   help="the former lone-tile predictor: softmax, then the argmax of the "
                        "probabilities")
    p.add_argument("--out", type=Path, default=RESULTS / "predictor-cost-cpu.json")
    args = p.parse_args(argv)
    if not args.model.is_file():
        return fail(f"{args.model} not found (make export, or a stand-in)")
    if args.threads:
        torch.set_num_threads(args.threads)
    record = {"benchmark": "lone-tile predictor per stage, CPU time per tile",
              "machine": cpu_machine(),
              "model": args.model.name, "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
              **measure(args.model, args.tile, args.micro_batch, args.rounds, args.softmax)}
    for stage in record["cpu_ms_per_tile"]:
        q = record["cpu_ms_per_tile"][stage]
        print(f"{stage:<8} {q['median']:7.3f} CPU ms per tile  ({q['p25']:.3f}-{q['p75']:.3f})")
    threads = record["torch_threads"]
    print(f"around the network: {record['around_network_cpu_ms']:.3f} CPU ms per tile "
          f"({threads} intra-op thread{'s' if threads != 1 else ''})")
    slow = record["slow_rounds"]
    if slow["share"]:
        stages = ", ".join(f"{name} {v['other_rounds']:.2f} -> {v['slow_rounds']:.2f}"
                           for name, v in slow["cpu_ms_per_tile"].items() if name != "whole")
        print(f"slow rounds (over {slow['factor']}x the median): {100 * slow['share']:.1f}%; "
              f"CPU ms per tile {stages}")
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
