"""The demo's serving half: start TorchServe with the archive, segment one image over HTTP in
three formats, write the results, stop the server.

    python -m handler.demo --image demo_out/scene.png --truth demo_out/scene_mask.png
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from handler.server import ServerError, TorchServe


def request(url: str, body: bytes, fmt: str) -> tuple[bytes, float]:
    """PUT the raw image (like ``curl -T``) asking for ``fmt``; (response body, seconds)."""
    req = urllib.request.Request(url, data=body, method="PUT",
                                 headers={"X-GeoSeg-Format": fmt,
                                          "Content-Type": "application/octet-stream"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.read(), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handler.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", default="model_store")
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--image", required=True, help="image to segment (PNG, JPEG, TIFF)")
    parser.add_argument("--truth", default=None,
                        help="optional mask of class ids (PNG) to report pixel accuracy against")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = Path(args.image).read_bytes()
    with Image.open(args.image) as im:
        scene = np.asarray(im.convert("RGB"))

    t0 = time.perf_counter()
    try:
        server = TorchServe(args.model_store, workdir=out / "torchserve").start()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"TorchServe ready at {server.url} in {time.perf_counter() - t0:.1f} s")
    try:
        url = f"{server.url}/predictions/geoseg"
        for fmt, name in (("png", "mask.png"), ("overlay", "overlay.jpg"), ("json", "summary.json")):
            answer, seconds = request(url, image, fmt)
            (out / name).write_bytes(answer)
            print(f"{fmt:>8}: {out / name} ({len(answer) / 1e3:.0f} kB, {seconds:.2f} s)")
    except urllib.error.HTTPError as exc:
        print(f"error: the server answered {exc.code}: {exc.read()[:300]!r}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    with Image.open(out / "mask.png") as im:
        classes = np.asarray(im)
        colours = np.asarray(im.convert("RGB"))
    with Image.open(out / "overlay.jpg") as im:
        overlay = np.asarray(im.convert("RGB"))
    gap = np.full((scene.shape[0], 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([scene, gap, colours, gap, overlay], axis=1)).save(out / "demo.png")
    summary = json.loads((out / "summary.json").read_text())
    shares = ", ".join(f"{c['name']} {100 * c['fraction']:.1f}%" for c in summary["classes"])
    print(f"image {scene.shape[1]}x{scene.shape[0]}: {shares}")
    if args.truth:
        with Image.open(args.truth) as im:
            truth = np.asarray(im)
        print(f"pixel accuracy against {args.truth}: {100 * float((classes == truth).mean()):.1f}%")
    print(f"wrote {out / 'demo.png'} (image | mask | overlay); server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
