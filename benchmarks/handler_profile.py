"""Where a served request's time goes, in-process: decode, predictor, tiling and stitching, encoding.

Runs the handler's own functions (no server) the way the worker does with its default settings
(``handler.inference.HandlerConfig``) on a generated PNG and times each stage (median of
repeats, seconds per request):

- ``decode``: PNG bytes to (H, W, 3) uint8 pixels (``handler.decode.decode_image``);
- ``predictor``: the time spent inside the tile predictors: uint8 tiles to the device, the
  forward pass, the softmax (blended tiles) and, for a tile alone in its image, the argmax on
  the device, and the copy back to the host;
- ``tiling_and_stitching``: the rest of ``handler.tiling.segment_images``: cutting tiles,
  blending their class probabilities across overlaps and the argmax of the blend on the host;
- ``encode_png``: the palette PNG of the class map.

A 512 x 512 request is one tile alone in its image (``lone_tile_predictor``); larger ones are
blended (``config_predictor``).

    python -m benchmarks.handler_profile --model model/geoseg.pt --size 512 --repeats 5
"""
from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks import cpu_machine
from common.allocator import keep_freed_memory
from common.cli import fail, parser, write_json
from handler.decode import decode_image
from handler.encode import encode
from handler.inference import HandlerConfig, config_predictor, lone_tile_predictor, warm_up
from handler.tiling import TilePredictor, segment_images
from model.artifact import load_artifact
from training.data.synthetic import generate_scene

STAGES = ("decode", "predictor", "tiling_and_stitching", "encode_png")


def timed(predict: TilePredictor, spent: list[float]) -> TilePredictor:
    """``predict``, appending the seconds each call takes to ``spent``."""
    def call(batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        answer = predict(batch)
        spent.append(time.perf_counter() - start)
        return answer
    return call


def profile(model_path: str, size: int, tile: int, overlap: int, micro_batch: int,
            device: str, repeats: int) -> dict[str, float]:
    """Median seconds per request of each stage for a ``size`` x ``size`` PNG, with the
    handler's predictors and its default settings but for the tile arguments."""
    dev = torch.device(device)
    config = HandlerConfig(tile_size=tile, tile_overlap=overlap, tile_batch_size=micro_batch)
    batch = config.micro_batch(dev)
    artifact = load_artifact(model_path, dev)
    half = config.half_precision and dev.type == "cuda"
    model = artifact.network.half() if half else artifact.network
    predict = config_predictor(model, dev, config)
    lone = lone_tile_predictor(model, dev, config)
    warm_up(predict, batch, tile)  # as the handler: the lone predictor shares the network
    rgb, _ = generate_scene((size, size), seed=11)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    data = buf.getvalue()
    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    for k in range(repeats + 1):  # the first pass warms up and is dropped
        spent: list[float] = []
        start = time.perf_counter()
        image = decode_image(data, 10 ** 9).rgb
        decoded = time.perf_counter()
        (classes,) = segment_images([image], timed(predict, spent), tile, overlap, batch,
                                    lone_ids=None if lone is None else timed(lone, spent))
        segmented = time.perf_counter()
        encode("png", classes, image, artifact.classes, None)
        encoded = time.perf_counter()
        if k:
            for name, seconds in zip(STAGES, (decoded - start, sum(spent),
                                               segmented - decoded - sum(spent),
                                               encoded - segmented), strict=True):
                stages[name].append(seconds)
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
    keep_freed_memory()  # as the worker does
    result = profile(args.model, args.size, args.tile, args.overlap, args.micro_batch,
                     args.device, args.repeats)
    total = sum(result.values())
    for name, seconds in result.items():
        print(f"{name:>20}: {1000 * seconds:9.1f} ms  ({100 * seconds / total:5.1f}%)")
    print(f"{'total':>20}: {1000 * total:9.1f} ms per {args.size}x{args.size} request")
    if args.out:
        write_json(args.out, {"size": args.size, "device": args.device,
                              "machine": cpu_machine(torch=torch.__version__),
                              "model": Path(args.model).name, "seconds": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
