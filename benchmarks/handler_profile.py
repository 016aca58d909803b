"""Where a served request's time goes, in-process: decode, tiling, model, stitching, encoding.

Runs the handler's own functions (no server) on a generated image and times each stage
(median of repeats, seconds per request). The model stage is the whole device round trip:
host-to-device copy, forward pass, argmax, device-to-host copy of uint8 classes.

    python -m benchmarks.handler_profile --model model/geoseg.pt --size 512 --repeats 5
"""
from __future__ import annotations

import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.cli import fail, parser
from handler.decode import decode_image
from handler.encode import encode
from handler.inference import HandlerConfig, tile_predictor
from handler.tiling import cut, paste, plan_tiles
from model.artifact import load_artifact
from training.data.synthetic import generate_scene


def profile(model_path: str, size: int, tile: int, overlap: int, micro_batch: int,
            device: str, repeats: int, channels_last: bool = True) -> dict[str, float]:
    """Median seconds per request of each stage for a ``size`` x ``size`` PNG."""
    dev = torch.device(device)
    micro_batch = HandlerConfig(tile_batch_size=micro_batch).micro_batch(dev)
    artifact = load_artifact(model_path, dev)
    model, table = artifact.network, artifact.classes
    predict = tile_predictor(model, dev, False, channels_last)
    rgb, _ = generate_scene((size, size), seed=11)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    data = buf.getvalue()
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "cut", "model", "paste", "encode_png")}
    for k in range(repeats + 1):  # the first pass warms up and is dropped
        t = [time.perf_counter()]
        image = decode_image(data, 10 ** 9).rgb
        t.append(time.perf_counter())
        tiles = plan_tiles(size, size, tile, overlap)
        batches = [np.stack([cut(image, w, tile) for w in tiles[i:i + micro_batch]])
                   for i in range(0, len(tiles), micro_batch)]
        t.append(time.perf_counter())
        classes = [c for b in batches for c in predict(b)]
        t.append(time.perf_counter())
        out = np.zeros((size, size), np.uint8)
        for w, c in zip(tiles, classes, strict=True):
            paste(out, w, c)
        t.append(time.perf_counter())
        encode("png", out, image, table, None)
        t.append(time.perf_counter())
        if k:
            for name, a, b in zip(stages, t[:-1], t[1:], strict=True):
                stages[name].append(b - a)
    return {name: statistics.median(v) for name, v in stages.items()}


def main(argv: list[str] | None = None) -> int:
    defaults = HandlerConfig()  # the handler's own tile settings
    p = parser("python -m benchmarks.handler_profile", __doc__)
    p.add_argument("--model", default="model/geoseg.pt", help="exported TorchScript file")
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--tile", type=int, default=defaults.tile_size, help="tile side in pixels")
    p.add_argument("--overlap", type=int, default=defaults.tile_overlap, help="tile overlap, pixels")
    p.add_argument("--micro-batch", type=int, default=defaults.tile_batch_size,
                   help="tiles per forward pass (0: the device's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up")
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args(argv)
    if not Path(args.model).is_file():
        return fail(f"{args.model} not found (make export)")
    result = profile(args.model, args.size, args.tile, args.overlap, args.micro_batch,
                     args.device, args.repeats)
    total = sum(result.values())
    for name, seconds in result.items():
        print(f"{name:>10}: {1000 * seconds:9.1f} ms  ({100 * seconds / total:5.1f}%)")
    print(f"{'total':>10}: {1000 * total:9.1f} ms per {args.size}x{args.size} request")
    if args.out:
        Path(args.out).write_text(json.dumps({"size": args.size, "device": args.device,
                                              "model": args.model, "seconds": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
