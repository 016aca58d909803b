"""Request and response helpers shared by the load tests (no locust import: no gevent patching)."""
from __future__ import annotations

import struct
import uuid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(body: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None for anything else."""
    if body[:8] != PNG_SIGNATURE or len(body) < 24:
        return None
    return struct.unpack(">II", body[16:24])


def multipart_file(data: bytes, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body holding ``data`` as ``field``; (body, Content-Type)."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
