"""Decoding a batch's requests side by side (``decode_threads``) answers exactly what decoding
them one after the other answers: same jobs in the same order, same errors, same bytes served."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from handler.batch import decode_pool, prepare_job, prepare_jobs
from handler.errors import RequestError
from handler.geoseg_handler import GeoSegHandler
from handler.inference import HandlerConfig
from handler.request import Job
from tests.helpers import geotiff_bytes, png_bytes, rgb_image, truncated
from tests.standins import StandInContext, write_standin
from training.data.synthetic import generate_scene


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def mixed_batch() -> tuple[list[dict], dict[int, dict[str, str]]]:
    """PNG, a truncated PNG, a GeoTIFF, .npy asking for .npy back, bytes of no format, JPEG-less
    text body: each row as TorchServe hands it, with its headers."""
    rgb = rgb_image(40, 50, seed=3)
    rows = [{"body": png_bytes(rgb)}, {"body": truncated(png_bytes(rgb))},
            {"body": geotiff_bytes(np.moveaxis(rgb, -1, 0))}, {"body": npy(rgb)},
            {"body": b"\x00" * 64}, {"body": png_bytes(rgb_image(30, 20, seed=4))}]
    headers = {3: {"Accept": "application/x-npy"}, 5: {"X-GeoSeg-Edges": "reflect"}}
    return rows, headers


def summary(job: Job | RequestError) -> tuple:
    if isinstance(job, RequestError):
        return ("error", job.status, str(job))
    return ("job", job.index, job.fmt, job.margin, job.image.rgb.tobytes(),
            None if job.image.valid is None else job.image.valid.tobytes())


def test_a_pool_gives_the_same_jobs_in_the_same_order():
    rows, headers = mixed_batch()

    def header(idx: int, name: str) -> str | None:
        return headers.get(idx, {}).get(name)

    alone = prepare_jobs(rows, header, 10**8, None, None)
    pool = decode_pool(3)
    assert pool is not None and decode_pool(1) is None
    together = prepare_jobs(rows, header, 10**8, None, pool)
    assert [summary(j) for j in together] == [summary(j) for j in alone]
    kinds = [s[0] for s in map(summary, alone)]
    assert kinds == ["job", "error", "job", "job", "error", "job"]
    pool.shutdown()


def test_the_pool_really_decodes_side_by_side():
    """With 4 threads, 4 requests are decoded at once (each decode waits for the others)."""
    rows = [{"body": png_bytes(rgb_image(20, 20, seed=i))} for i in range(4)]
    barrier = threading.Barrier(4, timeout=10)

    def header(idx: int, name: str) -> str | None:
        if name == "X-GeoSeg-Format":
            barrier.wait()  # only passes when all four requests are being prepared at once
        return None

    pool = decode_pool(4)
    jobs = prepare_jobs(rows, header, 10**8, None, pool)
    assert all(isinstance(j, Job) for j in jobs)
    pool.shutdown()
    assert isinstance(prepare_job(0, rows[0], lambda i, n: None, 10**8, None), Job)


def test_the_handler_with_decode_threads_serves_the_same_bytes(tmp_path):
    write_standin(tmp_path / "standin.pt")
    rows = [{"body": png_bytes(generate_scene((70, 90), seed=s)[0])} for s in range(3)]
    rows.append({"body": b"not an image"})
    answers = []
    for threads in (1, 3):
        config = {"tile_size": 32, "tile_overlap": 8, "decode_threads": threads}
        ctx = StandInContext(tmp_path, handler_config=config)
        handler = GeoSegHandler()
        handler.initialize(ctx)
        answers.append((handler.handle(rows, ctx), dict(ctx.status)))
    assert answers[0] == answers[1] and answers[0][1] == {3: 415}


def test_decode_threads_below_one_are_refused():
    with pytest.raises(ValueError, match="bad values"):
        HandlerConfig.from_mapping({"decode_threads": 0})
