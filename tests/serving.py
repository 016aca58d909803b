"""Helpers for tests against a real TorchServe: a stand-in archive, HTTP calls, answers."""
from __future__ import annotations

import http.client
import io
import json
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from benchmarks.responses import multipart_form
from handler.inference import HandlerConfig, model_config_yaml
from tests.helpers import png_bytes
from tests.standins import write_standin
from tools.archive import build_archive
from tools.server import TorchServe

STANDIN_HANDLER = HandlerConfig(tile_size=64, tile_overlap=16, tile_batch_size=8,
                                max_pixels=1_000_000)
"""The stand-in archives' handler settings: 64 px tiles, at most 1 Mpx per image."""


def standin_store(work: Path, delay_ms: int = 1500, workers: int = 1, blur: int = 3,
                  shared_dir: Optional[Path] = None) -> Path:
    """Build ``work/store/geoseg.mar`` around the colour-rule stand-in (receptive field
    ``blur``) with ``workers`` workers (and the handler's ``shared_dir`` when given); returns
    the store (the model is ``work/standin.pt``)."""
    config = work / "model-config.yaml"
    handler = replace(STANDIN_HANDLER, shared_dir=str(shared_dir or ""))
    config.write_text(model_config_yaml({"minWorkers": workers, "maxWorkers": workers,
                                         "batchSize": 4, "maxBatchDelay": delay_ms,
                                         "responseTimeout": 120}, handler))
    build_archive(write_standin(work / "standin.pt", blur), work / "store", config=config)
    return work / "store"


class Reply(NamedTuple):
    """One HTTP answer: ``status`` (int), ``content_type``, ``body`` bytes."""

    status: int
    content_type: Optional[str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def post(server: TorchServe, data: bytes, headers: Optional[dict] = None,
         form: Optional[dict[str, bytes]] = None, timeout: float = 120) -> Reply:
    """POST to ``/predictions/geoseg``: raw bytes, or a multipart form when ``form`` is given
    (its ``format`` entry becomes a plain field, the others file parts)."""
    headers = {"Content-Type": "application/octet-stream", **server.auth(), **(headers or {})}
    if form is not None:
        files = {k: v for k, v in form.items() if k != "format"}
        fields = {k: v for k, v in form.items() if k == "format"}
        data, headers["Content-Type"] = multipart_form(files, fields)
    req = urllib.request.Request(f"{server.url}/predictions/geoseg", data=data,
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, r.headers.get("Content-Type"), r.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers.get("Content-Type"), exc.read())


def announce_upload(server: TorchServe, size: int) -> int:
    """The status TorchServe answers to a request that announces ``size`` body bytes with
    ``Expect: 100-continue`` (what curl does for large uploads) before sending any of them."""
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["inference"], timeout=60)
    try:
        conn.putrequest("POST", "/predictions/geoseg")
        for name, value in (("Content-Type", "application/octet-stream"), *server.auth().items(),
                            ("Content-Length", str(size)), ("Expect", "100-continue")):
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def ping(server: TorchServe) -> str:
    """The ``status`` that ``/ping`` reports (Healthy when every model has a live worker)."""
    req = urllib.request.Request(f"{server.url}/ping", headers=server.auth())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["status"]


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an (H, W, 3) uint8 array with Pillow (PNG, JPEG, ...)."""
    return png_bytes(array, format=fmt)


def mask_of(body: bytes) -> np.ndarray:
    """The (H, W) class ids of a palette-PNG answer."""
    with Image.open(io.BytesIO(body)) as im:
        assert im.mode == "P"
        return np.asarray(im)
