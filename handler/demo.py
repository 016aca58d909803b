"""The demo's serving half: start TorchServe with the archive, segment one synthetic scene of
several tiles over HTTP, write the results, stop the server.

    python -m handler.demo --model-store model_store --out demo_out
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from handler.server import ServerError, TorchServe
from training.synthetic import generate_scene


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
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--seed", type=int, default=2030)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    scene, truth = generate_scene((args.height, args.width), args.seed)
    buf = io.BytesIO()
    Image.fromarray(scene).save(buf, format="PNG")
    (out / "scene.png").write_bytes(buf.getvalue())
    t0 = time.perf_counter()
    try:
        server = TorchServe(args.model_store, workdir=out / "torchserve").start()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"TorchServe ready at {server.url} in {time.perf_counter() - t0:.1f} s")
    try:
        url = f"{server.url}/predictions/geoseg"
        results = {}
        for fmt, name in (("png", "mask.png"), ("overlay", "overlay.jpg"), ("json", "summary.json")):
            body, seconds = request(url, buf.getvalue(), fmt)
            (out / name).write_bytes(body)
            results[fmt] = seconds
            print(f"{fmt:>8}: {out / name} ({len(body) / 1e3:.0f} kB, {seconds:.2f} s)")
    except urllib.error.HTTPError as exc:
        print(f"error: the server answered {exc.code}: {exc.read()[:300]!r}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    with Image.open(out / "mask.png") as im:
        classes = np.asarray(im)
        colours = np.asarray(im.convert("RGB"))
    accuracy = float((classes == truth).mean())
    with Image.open(out / "overlay.jpg") as im:
        overlay = np.asarray(im.convert("RGB"))
    gap = np.full((args.height, 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([scene, gap, colours, gap, overlay], axis=1)).save(out / "demo.png")
    summary = json.loads((out / "summary.json").read_text())
    shares = ", ".join(f"{c['name']} {100 * c['fraction']:.1f}%" for c in summary["classes"])
    print(f"scene {args.width}x{args.height}: {shares}; pixel accuracy against the scene's "
          f"own mask {100 * accuracy:.1f}%")
    print(f"wrote {out / 'demo.png'} (scene | mask | overlay); server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
