"""Request and response helpers shared by the load tests (no locust import: no gevent patching)."""
from __future__ import annotations

import io
import struct
import uuid

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(body: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None for anything else."""
    if body[:8] != PNG_SIGNATURE or len(body) < 24:
        return None
    return struct.unpack(">II", body[16:24])


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (the bulk format's body)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_size(body: bytes) -> tuple[int, int] | tuple[int, int, int] | None:
    """(width, height) of a 2-D ``.npy`` array (a class map), (width, height, N) of a 3-D one
    (a stack of N class maps) from its header, or None for anything else."""
    stream = io.BytesIO(body[:4096])
    try:
        major, _ = np.lib.format.read_magic(stream)
        header = (np.lib.format.read_array_header_1_0 if major == 1
                  else np.lib.format.read_array_header_2_0)
        shape, _, _ = header(stream)
    except ValueError:
        return None
    if len(shape) == 3:
        return shape[2], shape[1], shape[0]
    return (shape[1], shape[0]) if len(shape) == 2 else None


def expected_size(entry: dict) -> tuple[int, ...]:
    """What :data:`ANSWER_SIZE` must read from the answer to a manifest ``entry``
    (benchmarks/images.py): (width, height), and the stack's N for a stack."""
    return (entry["width"], entry["height"], *((entry["stack"],) if "stack" in entry else ()))


ANSWER_SIZE = {"png": png_size, "npy": npy_size}
"""The answer's (width, height) reader for each request format (answers come back in it;
(width, height, N) for a stack of N)."""
CONTENT_TYPE = {"png": "application/octet-stream", "npy": "application/x-npy"}
"""What a load test sends as Content-Type for each request format."""
ANSWER_TYPE = {"png": "image/png", "npy": "application/x-npy"}
"""What a load test asks for (Accept) and expects back for each request format."""


def answer_fault(entry: dict, status: int, content_type: str, body: bytes) -> str | None:
    """Why an answer to a manifest ``entry``'s request is wrong (status, content type, or the
    size :data:`ANSWER_SIZE` reads against :func:`expected_size`), or None when it is right."""
    fmt = entry.get("format", "png")
    if status != 200:
        return f"status {status}"
    if not content_type.startswith(ANSWER_TYPE[fmt]):
        return f"content type {content_type}"
    size = ANSWER_SIZE[fmt](body)
    return None if size == expected_size(entry) else f"output size {size}"


def multipart_form(files: dict[str, bytes], fields: dict[str, bytes] | None = None
                   ) -> tuple[bytes, str]:
    """A multipart/form-data body: ``files`` as file parts, ``fields`` as plain fields.

    Returns (body, Content-Type header value).
    """
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
             f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
             + value + b"\r\n" for name, value in files.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
              + value + b"\r\n" for name, value in (fields or {}).items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"
