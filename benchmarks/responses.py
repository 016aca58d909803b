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
