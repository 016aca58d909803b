"""How fast each available codec turns request bytes into pixels, and class maps into answers.

For ``--count`` generated 512 x 512 scenes, as PNG and as JPEG (quality 90): milliseconds per
tile to decode with the handler's own path (``handler.decode.decode_image``: Pillow), with
torchvision.io on the CPU, and, where CUDA is available, torchvision's batched nvJPEG decode on
the device; and to encode the answer as the handler's palette PNG at several zlib levels (with
the answer's size). Each decoder's pixels are compared with Pillow's (PNG must be identical;
JPEG decoders may round differently).

    python -m benchmarks.codecs --out benchmarks/results/codecs-cpu.json
"""
from __future__ import annotations

import functools
import io
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from common.cli import parser, write_json
from handler.decode import decode_image
from handler.encode import encode_png
from model.class_table import ClassTable
from training.data.synthetic import generate_scene


def scenes(count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` generated (rgb (H, W, 3) uint8, class ids (H, W) uint8) pairs."""
    return [generate_scene((size, size), seed=500 + k) for k in range(count)]


def encoded(images: list[np.ndarray], fmt: str) -> list[bytes]:
    out = []
    for rgb in images:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def per_item_ms(fn: Callable[[], Any], items: int, repeats: int) -> dict[str, float]:
    """Milliseconds per item of ``fn`` (which processes ``items`` items): median, min, max of
    ``repeats`` timed calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000 / items)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def encode_all(maps: list[np.ndarray], table: ClassTable, level: int) -> list[bytes]:
    return [encode_png(m, table, level) for m in maps]


def decoders(cuda: bool) -> dict[str, Callable[[list[bytes]], list[np.ndarray]]]:
    """Name -> function from a list of encoded images to (H, W, 3) uint8 arrays."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.io import decode_image as tv_decode

    def handler_path(bodies: list[bytes]) -> list[np.ndarray]:
        return [decode_image(b, 10 ** 9).rgb for b in bodies]

    def torchvision_cpu(bodies: list[bytes]) -> list[np.ndarray]:
        return [tv_decode(torch.frombuffer(bytearray(b), dtype=torch.uint8), ImageReadMode.RGB)
                .permute(1, 2, 0).numpy() for b in bodies]

    found: dict[str, Callable[[list[bytes]], list[np.ndarray]]] = {
        "handler (Pillow)": handler_path, "torchvision.io cpu": torchvision_cpu}
    if cuda:
        def nvjpeg(bodies: list[bytes]) -> list[np.ndarray]:
            data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in bodies]
            out = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
            torch.cuda.synchronize()
            return [t.permute(1, 2, 0).cpu().numpy() for t in out]
        found["torchvision nvjpeg cuda (batched)"] = nvjpeg
    return found


def run(count: int, size: int, repeats: int, levels: tuple[int, ...]) -> dict[str, Any]:
    """Decode and encode timings; see the module docstring."""
    cuda = torch.cuda.is_available()
    pairs = scenes(count, size)
    images = [rgb for rgb, _ in pairs]
    result: dict[str, Any] = {"tile": size, "count": count, "repeats": repeats,
                              "device": torch.cuda.get_device_name() if cuda else "cpu",
                              "torch": torch.__version__, "decode": [], "encode_png": []}
    for fmt in ("PNG", "JPEG"):
        bodies = encoded(images, fmt)
        reference = decoders(False)["handler (Pillow)"](bodies)
        for name, decode in decoders(cuda).items():
            if "nvjpeg" in name and fmt != "JPEG":
                continue
            try:
                pixels = decode(bodies)
            except RuntimeError as exc:
                result["decode"].append({"format": fmt, "decoder": name, "error": str(exc)[:200]})
                continue
            differ = float(np.mean([np.mean(p != r) for p, r in zip(pixels, reference, strict=True)]))
            timing = per_item_ms(functools.partial(decode, bodies), count, repeats)
            result["decode"].append({"format": fmt, "decoder": name, "ms_per_tile": timing,
                                     "bytes_per_tile": sum(map(len, bodies)) / count,
                                     "fraction_of_values_differing_from_pillow": differ})
    table = ClassTable.load()
    maps = [ids for _, ids in pairs]
    for level in levels:
        timing = per_item_ms(functools.partial(encode_all, maps, table, level), count, repeats)
        size_bytes = sum(len(encode_png(m, table, level)) for m in maps) / count
        result["encode_png"].append({"compress_level": level, "ms_per_tile": timing,
                                     "bytes_per_tile": size_bytes})
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"{result['device']}, {result['count']} tiles of {result['tile']} px, median [min, max] ms per tile"]
    for d in result["decode"]:
        if "error" in d:
            lines.append(f"decode {d['format']:<4} {d['decoder']:<34} error: {d['error']}")
            continue
        t = d["ms_per_tile"]
        lines.append(f"decode {d['format']:<4} {d['decoder']:<34} {t['median']:7.2f} "
                     f"[{t['min']:.2f}, {t['max']:.2f}]  differs from Pillow in "
                     f"{100 * d['fraction_of_values_differing_from_pillow']:.3f}% of values")
    for e in result["encode_png"]:
        t = e["ms_per_tile"]
        lines.append(f"encode palette PNG level {e['compress_level']}: {t['median']:6.2f} "
                     f"[{t['min']:.2f}, {t['max']:.2f}] ms, {e['bytes_per_tile'] / 1e3:.1f} kB")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = parser("python -m benchmarks.codecs", __doc__)
    p.add_argument("--count", type=int, default=16, help="tiles per timed call")
    p.add_argument("--size", type=int, default=512, help="tile side, pixels")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6], help="PNG zlib levels")
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args(argv)
    result = run(args.count, args.size, args.repeats, tuple(args.levels))
    print(report(result))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
