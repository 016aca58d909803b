"""The requests of one TorchServe batch turned into jobs: format, edges and bytes read from each
request, images decoded one after the other or side by side in a thread pool.

Decoding is most of a worker's CPU (a 512 x 512 PNG: about 6 ms, the model's own host work about
1 ms); Pillow, libtiff (through rasterio) and NumPy release the GIL while they decode, so threads
let one worker use several cores for it while it keeps one copy of the model on the device
(``HandlerConfig.decode_threads``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Optional

from handler.decode import decode_image
from handler.errors import RequestError
from handler.request import DEFAULT_FORMAT, Job, choose_format, choose_margin, image_bytes, stack_format
from handler.scaling import BandScaling
from handler.shared import ANSWER_HEADER, INPUT_HEADER, SharedFolder, not_shared_error

HeaderReader = Callable[[int, str], Optional[str]]
"""``header(index, name)``: a header of request ``index`` of the batch, or None."""


def decode_pool(threads: int) -> Optional[Executor]:
    """A pool of ``threads`` decoding threads, or None for 1 (decode in the caller's thread)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="geoseg-decode") if threads > 1 else None


def request_data(index: int, row: Mapping[str, Any], header: HeaderReader,
                 shared: Optional[SharedFolder]) -> tuple[bytes, Optional[str]]:
    """The image bytes of request ``index`` (its body, or the shared file it names) and the
    shared file its answer goes to (None: the response body); RequestError when either is
    asked of a server without a shared folder, or names a file it may not."""
    input_name, answer_name = header(index, INPUT_HEADER), header(index, ANSWER_HEADER)
    if shared is None and (input_name or answer_name):
        raise not_shared_error()
    answer = shared.answer_name(answer_name) if shared is not None else None
    if shared is not None and input_name:
        return shared.read(input_name), answer
    return image_bytes(row, header(index, "Content-Type"), header(index, "Content-Length")), answer


def prepare_job(index: int, row: Mapping[str, Any], header: HeaderReader, max_pixels: int,
                scaling: Optional[BandScaling], shared: Optional[SharedFolder] = None
                ) -> Job | RequestError:
    """Request ``index`` of the batch as a :class:`Job` (decoded image, format, edges, answer
    file) or the :class:`RequestError` it deserves."""
    try:
        fmt = choose_format(row, header(index, "X-GeoSeg-Format"), header(index, "Accept"),
                            default=None)
        margin = choose_margin(header(index, "X-GeoSeg-Edges"))
        data, answer_file = request_data(index, row, header, shared)
        image = decode_image(data, max_pixels, scaling)
        fmt = stack_format(fmt, len(image.rgb)) if image.stacked else fmt or DEFAULT_FORMAT
        return Job(index, image, fmt, margin, answer_file)
    except RequestError as exc:
        return exc


def prepare_jobs(rows: Sequence[Mapping[str, Any]], header: HeaderReader, max_pixels: int,
                 scaling: Optional[BandScaling], pool: Optional[Executor] = None,
                 shared: Optional[SharedFolder] = None) -> list[Job | RequestError]:
    """One Job or RequestError per request, in the batch's order; decoded in ``pool`` when
    given (the answers are the same either way); ``shared``: the server's shared folder."""
    if pool is None or len(rows) < 2:
        return [prepare_job(i, row, header, max_pixels, scaling, shared)
                for i, row in enumerate(rows)]
    futures = [pool.submit(prepare_job, i, row, header, max_pixels, scaling, shared)
               for i, row in enumerate(rows)]
    return [f.result() for f in futures]
