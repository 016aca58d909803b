"""What the map of network and forest together costs on the CPU, per photo and part: the forest's
features, its trees, the regions, for the shipped settings and the ones they replaced.

    python -m benchmarks.fusion_cost --model RUN/last.pt --images tile5/images/*.jpg --scale 0.5

``--model``: a checkpoint or export that carries its forest (trained with forest labels). Each
photo is read and resized by ``--scale`` as ``geoseg train --scale`` does, and given the network's
probabilities once (not timed); then each setting maps it ``--repeats`` times, the settings in
turn (the order reversed on odd repeats), and the process's CPU seconds (all threads) and wall
seconds of :meth:`training.labels.fusion.ForestFusion.probabilities` are kept, with the
forest's own split (features, trees) from its timings; the regions are the rest. Results:
``benchmarks/results/fusion-cost-cpu.json``, medians and ranges per setting and the ratio of each
setting's CPU to the first one's per repeat.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import RESULTS, cpu_machine
from benchmarks.predict import summary
from common.cli import at_least, existing_file, fail, parser, write_json
from training.data.sources import read_rgb
from training.experiments.combine import network_probabilities
from training.labels.fusion import (
    FOREST_TREES,
    FOREST_WEIGHT,
    REGION_SCALES,
    REGION_WEIGHT,
    ForestFusion,
)
from training.run.evaluate import load_with_forest

SETTINGS: dict[str, dict[str, Any]] = {
    "shipped": {"scales": REGION_SCALES, "trees": FOREST_TREES},
    "one scale (100), 200 trees": {"scales": (100.0,), "trees": 200},
}
"""The settings compared: the shipped map, and the map it replaced (the first is the ratios'
base)."""


def timed(fusion: ForestFusion, image: np.ndarray, network: np.ndarray) -> dict[str, float]:
    """CPU and wall seconds of one fused map of ``image``, and the forest's share of them."""
    before = (fusion.timings.features, fusion.timings.predict)
    cpu, wall = time.process_time(), time.perf_counter()
    fusion.probabilities(image, network)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    features = fusion.timings.features - before[0]
    trees = fusion.timings.predict - before[1]
    return {"cpu_s": cpu, "wall_s": wall, "features_wall_s": features, "trees_wall_s": trees,
            "regions_and_mix_wall_s": wall - features - trees}


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.fusion_cost", __doc__)
    p.add_argument("--model", type=existing_file, required=True,
                   help="checkpoint or export carrying its forest")
    p.add_argument("--images", type=existing_file, nargs="+", required=True, help="photos")
    p.add_argument("--scale", type=float, default=1.0, help="resize factor of the photos")
    p.add_argument("--repeats", type=at_least(1), default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "fusion-cost-cpu.json")
    args = p.parse_args(argv)
    model, table, samples = load_with_forest(args.model, torch.device("cpu"))
    if samples is None:
        return fail(f"{args.model}: carries no forest (train with forest labels)")
    fusions = {name: ForestFusion(samples, table.num_classes, scales=s["scales"], trees=s["trees"])
               for name, s in SETTINGS.items()}
    photos = [read_rgb(path, args.scale) for path in args.images]
    networks = [network_probabilities(model, photo, flip=False) for photo in photos]
    megapixels = sum(photo.shape[0] * photo.shape[1] for photo in photos) / 1e6
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in fusions}
    for repeat in range(args.repeats):
        order = list(fusions) if repeat % 2 == 0 else list(fusions)[::-1]
        for name in order:
            parts = [timed(fusions[name], photo, net) for photo, net in zip(photos, networks)]
            runs[name].append({key: sum(part[key] for part in parts) for key in parts[0]})
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name} {runs[name][-1]['cpu_s']:.1f} CPU s" for name in fusions), flush=True)
    base = list(fusions)[0]
    rows = [{"setting": name, **SETTINGS[name],
             **{key: summary([run[key] for run in runs[name]]) for key in runs[name][0]},
             "cpu_s_per_megapixel": summary([run["cpu_s"] / megapixels for run in runs[name]]),
             "cpu_over_shipped": summary([a["cpu_s"] / b["cpu_s"]
                                          for a, b in zip(runs[name], runs[base])])}
            for name in fusions]
    record = {"benchmark": "map of network and forest together: CPU per photo and part",
              "machine": cpu_machine(torch=torch.__version__),
              "model": Path(args.model).name, "photos": len(photos), "megapixels": megapixels,
              "scale": args.scale, "repeats": args.repeats,
              "forest_weight": FOREST_WEIGHT, "region_weight": REGION_WEIGHT, "rows": rows}
    for row in rows:
        print(f"{row['setting']}: {row['cpu_s_per_megapixel']['median']:.1f} CPU s per Mpx "
              f"(features {row['features_wall_s']['median']:.1f} s, trees "
              f"{row['trees_wall_s']['median']:.1f} s, regions and mix "
              f"{row['regions_and_mix_wall_s']['median']:.1f} s of wall), "
              f"{row['cpu_over_shipped']['median']:.2f}x the shipped map's CPU")
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
