"""Locust load test: FastHttpUsers post a fixed image set to GeoSeg (or to the Flask peer).

Environment: ``GEOSEG_IMAGES`` (manifest.json from benchmarks/images.py), ``GEOSEG_TARGET``
(``geoseg``: raw body to /predictions/geoseg; ``peer``: multipart ``file`` to /predict),
``GEOSEG_DURATION`` (s; only answers completed within this window after spawning count
towards tiles/s), ``GEOSEG_TILES_OUT`` (JSON files ``<it>.<pid>`` for the tile counts, one per
locust process), ``GEOSEG_KEY`` (TorchServe's inference key, sent as a Bearer token when set),
``GEOSEG_SHARED_DIR`` (the server's shared folder, ``handler.shared``: each request's bytes are
written to a file of the user's there, the body is empty, and the answer is read from the
answer file the response names).

Each answer must be 200, in the request's format (PNG images get a palette PNG, ``.npy`` arrays
of the bulk format a ``.npy`` of class ids) and of the input's width and height.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from locust import FastHttpUser, constant, events, task

from benchmarks.responses import ANSWER_TYPE, CONTENT_TYPE, answer_fault, multipart_form
from handler.shared import ANSWER_HEADER, INPUT_HEADER

MANIFEST_PATH = Path(os.environ.get("GEOSEG_IMAGES", "benchmarks/images/manifest.json"))
TARGET = os.environ.get("GEOSEG_TARGET", "geoseg")
WINDOW = float(os.environ.get("GEOSEG_DURATION", "inf"))
AUTH = {"Authorization": f"Bearer {os.environ['GEOSEG_KEY']}"} if os.environ.get("GEOSEG_KEY") else {}
SHARED = Path(os.environ["GEOSEG_SHARED_DIR"]) \
    if os.environ.get("GEOSEG_SHARED_DIR") and TARGET == "geoseg" else None  # the peer: bodies
MANIFEST = json.loads(MANIFEST_PATH.read_text())
IMAGES = [(entry, (MANIFEST_PATH.parent / entry["file"]).read_bytes()) for entry in MANIFEST["images"]]


@dataclass
class Counts:
    """Answers counted since spawning completed: tiles and images within the window, late ones."""

    tiles: int = 0
    images: int = 0
    late: int = 0
    start: Optional[float] = None  # time.monotonic() when spawning completed

    def reset(self, start: float) -> None:
        self.tiles = self.images = self.late = 0
        self.start = start


COUNTS = Counts()


@events.spawning_complete.add_listener
def _start(user_count: int, **kwargs) -> None:
    COUNTS.reset(time.monotonic())


@events.test_stop.add_listener
def _stop(**kwargs) -> None:
    out = os.environ.get("GEOSEG_TILES_OUT")
    if out:  # one file per process: with --processes every worker counts its own answers
        Path(f"{out}.{os.getpid()}").write_text(
            json.dumps({k: v for k, v in asdict(COUNTS).items() if k != "start"}))


class SegmentationUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 600.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.next_image = id(self) % len(IMAGES)
        self.files = f"user-{os.getpid()}-{id(self):x}"  # this user's files in the shared folder

    @task
    def segment(self) -> None:
        entry, data = IMAGES[self.next_image]
        self.next_image = (self.next_image + 1) % len(IMAGES)
        fmt = entry.get("format", "png")
        if TARGET == "peer":
            body, content_type = multipart_form({"file": data})
            path = "/predict"
        else:
            body, content_type = data, CONTENT_TYPE[fmt]
            path = "/predictions/geoseg"
        headers = {"Content-Type": content_type, "Accept": ANSWER_TYPE[fmt], **AUTH}
        if SHARED is not None:  # the bytes go through the shared folder
            (SHARED / f"{self.files}-in").write_bytes(data)
            headers.update({INPUT_HEADER: f"{self.files}-in", ANSWER_HEADER: f"{self.files}-out",
                            "Content-Type": "application/octet-stream"})
            body = b""
        # locust's stub says str | dict, but FastHttpSession sends bytes as they are
        with self.client.post(path, data=body, headers=headers,  # type: ignore[arg-type]
                              name=entry["kind"], catch_response=True) as response:
            answer_type = response.headers.get("Content-Type") or ""
            answer = response.content or b""
            if SHARED is not None and response.status_code == 200:
                written = json.loads(answer)
                answer_type = written["content_type"]
                answer = (SHARED / written["answer_file"]).read_bytes()
            fault = answer_fault(entry, response.status_code, answer_type, answer)
            if fault:
                response.failure(fault)
            else:
                response.success()
                start = COUNTS.start
                if start is not None and time.monotonic() - start <= WINDOW:
                    COUNTS.tiles += entry["tiles"]
                    COUNTS.images += 1
                else:
                    COUNTS.late += 1
