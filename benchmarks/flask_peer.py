"""The design GeoSeg replaces, kept as a benchmark baseline: a plain Flask app, one route.

``POST /predict`` with multipart ``file``: the whole image through the same TorchScript model in
one forward pass (no tiling, no batching), answered as the same palette PNG.

    python -m benchmarks.flask_peer --model model/geoseg.pt --port 5000
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from flask import Flask, Response, request
from PIL import Image

from handler.encode import encode_png
from model.artifact import load_artifact


def create_app(model_path: str, device: str = "cpu") -> Flask:
    artifact = load_artifact(model_path, torch.device(device))
    model, table = artifact.network, artifact.classes
    app = Flask("geoseg-flask-peer")

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/predict")
    def predict() -> Response:
        upload = request.files.get("file")
        if upload is None:
            return Response('{"error": "multipart field file missing"}', 400,
                            mimetype="application/json")
        rgb = np.asarray(Image.open(upload.stream).convert("RGB"))
        x = torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float().div_(255)
        with torch.inference_mode():
            classes = model(x)["out"].argmax(1)[0].to(torch.uint8).cpu().numpy()
        return Response(encode_png(classes, table), mimetype="image/png")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flask_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="model/geoseg.pt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    create_app(args.model, args.device).run(args.host, args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
