"""Mixed load against a real TorchServe: good requests checked byte for byte against a
single-request reference, bad ones against their documented 4xx.

Used by ``tests/handler/test_soak.py`` (short in ``make test``, long in ``make soak``).
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from tests.bad_inputs import bad_requests
from tests.helpers import geotiff_bytes
from tests.serving import Reply, announce_upload, png, post
from tools.server import TorchServe, rss_bytes
from training.data.synthetic import generate_scene


@dataclass
class MixRequest:
    """One kind of request in the mix. ``send`` makes the call; a good request's answer must
    equal ``reference`` (taken alone before the load), a bad one's status ``expected_status``."""

    name: str
    send: Callable[[TorchServe, float], Reply]
    expected_status: int
    reference: Optional[bytes] = None

    @property
    def good(self) -> bool:
        return self.expected_status == 200

    def correct(self, reply: Reply) -> bool:
        if reply.status != self.expected_status:
            return False
        return reply.body == self.reference if self.good else True


@dataclass
class Outcome:
    """One request as a client saw it: ``status`` is an int, or the exception's name when no
    HTTP answer came (connection closed, timeout). ``start`` / ``seconds`` in seconds."""

    name: str
    status: int | str
    correct: bool
    start: float
    seconds: float


SOAK_FAULTS = ("truncated PNG", "text", "decompression bomb", "wrong field name",
               "unknown format field")
"""The bad requests of the mix (tests/bad_inputs.py), besides the over-size upload."""


def sender(body: bytes, headers: Optional[dict] = None, form: Optional[dict] = None
           ) -> Callable[[TorchServe, float], Reply]:
    return lambda server, timeout: post(server, body, headers, form, timeout=timeout)


def request_mix(max_request_bytes: int) -> list[MixRequest]:
    """Three good requests (PNG -> palette PNG, GeoTIFF -> GeoTIFF, multipart JPEG -> JSON)
    and six bad ones (:data:`SOAK_FAULTS` and an upload announced above
    ``max_request_bytes``)."""
    scene, _ = generate_scene((150, 130), seed=9)
    wide, _ = generate_scene((90, 260), seed=11)
    geotiff = geotiff_bytes(np.moveaxis(wide, -1, 0).copy())

    def oversize(server: TorchServe, timeout: float) -> Reply:
        return Reply(announce_upload(server, max_request_bytes + 1), None, b"")

    faults = [MixRequest(b.name, sender(b.body, b.headers, b.form), b.status)
              for b in bad_requests(scene) if b.name in SOAK_FAULTS]
    return [
        MixRequest("png", sender(png(scene)), 200),
        MixRequest("geotiff", sender(geotiff, {"Accept": "image/tiff"}), 200),
        MixRequest("multipart json", sender(b"", form={"file": png(scene, "JPEG"),
                                                        "format": b"json"}), 200),
        *faults,
        MixRequest("over-size upload", oversize, 413),
    ]


def take_references(server: TorchServe, mix: list[MixRequest]) -> None:
    """Send each request once, alone; keep the good ones' answers as their references."""
    for item in mix:
        reply = item.send(server, 120)
        if reply.status != item.expected_status:
            raise AssertionError(f"{item.name}: {reply.status} alone, expected "
                                 f"{item.expected_status}: {reply.body[:300]!r}")
        if item.good:
            item.reference = reply.body


@dataclass
class LoadRun:
    """Outcomes of ``clients`` closed-loop clients and worker RSS samples (bytes) over time."""

    t0: float = 0.0
    """time.monotonic() at the start; Outcome.start and the RSS times count from it."""
    outcomes: list[Outcome] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)


def run_load(server: TorchServe, mix: list[MixRequest], clients: int, seconds: float,
             good_share: float = 0.7, timeout: float = 120, seed: int = 0,
             during: Optional[Callable[[float], None]] = None) -> LoadRun:
    """Closed-loop clients pick good requests with probability ``good_share`` for ``seconds``.
    The calling thread samples the worker's RSS once a second and calls ``during(elapsed)``."""
    t0 = time.monotonic()
    run = LoadRun(t0)
    lock = threading.Lock()
    deadline = t0 + seconds
    good = [m for m in mix if m.good]
    bad = [m for m in mix if not m.good]

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        while time.monotonic() < deadline:
            item = rng.choice(good if rng.random() < good_share else bad)
            start = time.monotonic()
            try:
                reply = item.send(server, timeout)
                status: int | str = reply.status
                correct = item.correct(reply)
            except OSError as exc:  # no HTTP answer: connection closed or timed out
                status, correct = type(exc).__name__, False
            with lock:
                run.outcomes.append(Outcome(item.name, status, correct, start - t0,
                                            time.monotonic() - start))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        elapsed = time.monotonic() - t0
        if during is not None:
            during(elapsed)
        try:
            run.rss.append((elapsed, rss_bytes(server.worker_pid())))
        except Exception:  # the worker is being replaced: no sample this second
            pass
        time.sleep(1)
    for t in threads:
        t.join()
    return run


def status_counts(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[str(o.status)] = counts.get(str(o.status), 0) + 1
    return dict(sorted(counts.items()))


def latency_ms(outcomes: list[Outcome]) -> dict[str, float]:
    """Median, 95th percentile and max latency of the correctly answered ``outcomes``, in ms."""
    seconds = np.array([o.seconds for o in outcomes if o.correct]) * 1000
    if seconds.size == 0:
        return {}
    return {"p50": round(float(np.median(seconds)), 1),
            "p95": round(float(np.percentile(seconds, 95)), 1),
            "max": round(float(seconds.max()), 1)}
