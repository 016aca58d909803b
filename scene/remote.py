"""Windows of a scene sent to TorchServe replicas: the same classes as the local model.

Each window goes as one request in the bulk format (a ``.npy`` array of its raw bands and,
where some pixels have no data, a validity band: nothing to compress or decode on either side)
to ``POST <server>/predictions/geoseg`` with ``X-GeoSeg-Edges: none`` (the window already
carries its context) and comes back as a ``.npy`` array of class ids. Requests are
spread round-robin over the servers, ``concurrency`` at a time; 503 / 507 answers, timeouts and
connection errors are retried on the next server with exponential backoff; any other answer
stops the run with the server's error. Rasters that are not 8-bit are sent as they are and
scaled by the served model's band statistics (a model without them stretches each window on
its own: use the local model, or export with statistics, for such rasters).

With ``shared_dir`` (servers on this machine whose handler names the same folder,
``handler.shared``), each window's ``.npy`` is written to a file there and its class ids come
back in another; the HTTP request and answer carry only their names. Both files are removed
once the answer is read.
"""
from __future__ import annotations

import io
import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from common.cli import warn
from handler.scaling import BandScaling
from handler.shared import ANSWER_HEADER, INPUT_HEADER
from model.class_table import ClassTable
from scene.source import SceneError, SceneSource
from tools.server import KEY_FILE, bearer

RETRY_STATUS = {503, 507}
RETRIES = 8
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
TIMEOUT_S = 600.0
PING_TIMEOUT_S = 5.0
"""Seconds a server has to answer ``GET /ping`` before the run starts."""


def endpoint(server: str) -> str:
    """``http://host:port`` -> its GeoSeg prediction URL (a full URL is kept as given)."""
    server = server.rstrip("/")
    return server if "/predictions/" in server else server + "/predictions/geoseg"


def ping_url(server: str) -> str:
    """``http://host:port/ping`` for a server or prediction URL (TorchServe's health check)."""
    parts = urllib.parse.urlsplit(endpoint(server))
    return f"{parts.scheme}://{parts.netloc}/ping"


def ping(server: str, token: Optional[str] = None, timeout_s: float = PING_TIMEOUT_S
         ) -> Optional[str]:
    """Why ``server`` cannot take windows (it does not answer ``GET /ping``, or answers that it
    is unhealthy), or None when it is up. A refusal for want of a token counts as up: the
    prediction requests say what is wrong with the token."""
    url = ping_url(server)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(token)),
                                    timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        body = _body(exc)
        if exc.code in (401, 403) or _key_refused(exc.code, body):
            return None
        return f"GET /ping answered {exc.code}: {_error_text(exc, body)}"
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as exc:
        return f"no answer to GET /ping ({getattr(exc, 'reason', exc)})"


def read_token(path: Optional[str | Path]) -> Optional[str]:
    """The inference key in TorchServe's ``key_file.json``, or a file holding the token alone;
    without ``path``, the ``key_file.json`` of the current folder if there is one (where
    ``geoseg serve`` started TorchServe)."""
    if path is None:
        if not Path(KEY_FILE).is_file():
            return None
        path = KEY_FILE
    text = Path(path).read_text().strip()
    try:
        return str(json.loads(text)["inference"]["key"])
    except (ValueError, KeyError, TypeError):
        return text


def window_npy(bands: np.ndarray, valid: Optional[np.ndarray]) -> bytes:
    """(B, h, w) raw bands (1: grey, 3: RGB) as the bulk format's ``.npy`` (h, w, B), with a
    validity band (1 data, 0 none) after them where ``valid`` (h, w) bool marks no data."""
    pixels = np.moveaxis(bands, 0, -1)
    if valid is not None:
        pixels = np.concatenate([pixels, valid[..., None].astype(bands.dtype)], axis=-1)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(pixels), allow_pickle=False)
    return buf.getvalue()


class ServerError(SceneError):
    """A server answered with an error that retrying cannot fix."""


class ServerSegmenter:
    """Segments windows on TorchServe replicas (see the module docstring)."""

    scaling: Optional[BandScaling] = None

    def __init__(self, servers: list[str], concurrency: int = 2, token: Optional[str] = None,
                 retries: int = RETRIES, timeout_s: float = TIMEOUT_S,
                 shared_dir: Optional[Path] = None) -> None:
        if not servers:
            raise ValueError("at least one server")
        self.shared_dir = shared_dir
        self.urls = self._answering([endpoint(s) for s in servers], token)
        self.workers = max(1, concurrency)
        self.token, self.retries, self.timeout_s = token, retries, timeout_s
        self._next = itertools.cycle(range(len(self.urls)))
        self._lock = threading.Lock()
        self.retried = 0
        self.table = self._class_table()

    @staticmethod
    def _answering(urls: list[str], token: Optional[str]) -> list[str]:
        """``urls`` of the servers that answer ``/ping``; a warning names each one that does
        not, and ServerError (one line) says so when none does."""
        problems = {url: ping(url, token) for url in urls}
        up = [url for url in urls if problems[url] is None]
        down = [f"{url.split('/predictions/')[0]} is down: {problems[url]}"
                for url in urls if problems[url]]
        if not up:
            raise ServerError(f"{'; '.join(down)}; start it (geoseg serve) or check --server")
        for line in down:
            warn(f"{line}; its windows go to the other servers")
        return up

    def _class_table(self) -> ClassTable:
        """The served model's classes, from the JSON answer for a tiny image."""
        probe = io.BytesIO()
        Image.new("RGB", (8, 8)).save(probe, format="PNG")
        summary = json.loads(self.post(probe.getvalue(), "image/png", "json"))
        classes = sorted(summary["classes"], key=lambda c: c["id"])
        return ClassTable(tuple(c["name"] for c in classes),
                          tuple(tuple(c["color"]) for c in classes), name="served")

    def fingerprint(self) -> dict[str, Any]:
        return {"model": "served:" + ",".join(self.table.names)}

    def __call__(self, source: SceneSource, bands: np.ndarray,
                 valid: Optional[np.ndarray]) -> np.ndarray:
        window = window_npy(bands, valid)
        body = (self.post(window, "application/x-npy", "npy") if self.shared_dir is None
                else self.post_shared(window))
        try:
            classes = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ServerError(f"server answered something other than a .npy class map ({exc}); "
                              "is it an older GeoSeg?") from None
        if classes.shape != bands.shape[1:]:
            raise ServerError(f"server answered a {classes.shape} map for a "
                              f"{bands.shape[1:]} window")
        return classes

    def post_shared(self, window: bytes) -> bytes:
        """The answer to ``window`` (``.npy`` bytes) sent through the shared folder: written to
        a file of its own there, answered into another, both removed afterwards."""
        assert self.shared_dir is not None
        name = f"geoseg-window-{uuid.uuid4().hex}"
        request, answer = self.shared_dir / f"{name}.npy", self.shared_dir / f"{name}-classes.npy"
        try:
            request.write_bytes(window)
            self.post(b"", "application/octet-stream", "npy",
                      {INPUT_HEADER: request.name, ANSWER_HEADER: answer.name})
            return answer.read_bytes()
        except FileNotFoundError:
            raise ServerError(f"the server wrote no {answer.name} in {self.shared_dir}: is it the "
                              "shared_dir of every --server's handler?") from None
        finally:
            request.unlink(missing_ok=True)
            answer.unlink(missing_ok=True)

    def post(self, body: bytes, content_type: str, fmt: str,
             extra_headers: Optional[dict[str, str]] = None) -> bytes:
        """POST ``body`` (with ``extra_headers``) and return the answer, retrying overloads and
        dropped connections."""
        headers = {"Content-Type": content_type, "X-GeoSeg-Format": fmt,
                   "X-GeoSeg-Edges": "none", **bearer(self.token), **(extra_headers or {})}
        for attempt in range(self.retries + 1):
            with self._lock:
                url = self.urls[next(self._next)]
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    return answer.read()
            except urllib.error.HTTPError as exc:
                body = _body(exc)
                if _key_refused(exc.code, body):
                    raise ServerError(f"{url.split('/predictions/')[0]} refused "
                                      f"{'a wrong or expired' if self.token else 'a request without an'}"
                                      f" inference key: pass --token-file with the server's "
                                      f"{KEY_FILE} (read by itself from the folder the server "
                                      f"was started in)") from None
                if exc.code not in RETRY_STATUS:
                    raise ServerError(f"{url} answered {exc.code}: {_error_text(exc, body)}") from None
                reason = f"{exc.code}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                reason = str(getattr(exc, "reason", exc))
            if attempt == self.retries:
                raise ServerError(f"{url}: gave up after {self.retries + 1} attempts ({reason})")
            with self._lock:
                self.retried += 1
            time.sleep(min(BACKOFF_MAX_S, BACKOFF_S * 2 ** attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")


def _body(exc: urllib.error.HTTPError) -> bytes:
    """The body of an error answer (empty when it cannot be read)."""
    try:
        return exc.read() or b""
    except OSError:
        return b""


def _key_refused(status: int, body: bytes) -> bool:
    """Whether TorchServe's token check turned the request away (0.12 answers a missing,
    wrong or expired key with 400 and an ``InvalidKeyException``)."""
    return status == 400 and b"InvalidKeyException" in body


def _error_text(exc: urllib.error.HTTPError, body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", exc.reason))
    except (ValueError, AttributeError):
        return str(exc.reason)
