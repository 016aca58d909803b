"""Requests whose pixels and answers travel through a shared folder, not through HTTP.

A client on the same machine as the server (a pipeline on a GPU host, ``geoseg predict`` next to
its server) can skip the bytes' trip through TorchServe's frontend: it writes the request's
image bytes (any format the body takes; the bulk format's ``.npy`` costs nothing to decode) to a
file in the folder the server names in its ``handler:`` section (``shared_dir``), and posts an
empty body with the header ``X-GeoSeg-Shared-Input: <file name>``. With
``X-GeoSeg-Shared-Answer: <file name>`` the answer is written to that file in the same folder
(whole, then renamed into place) and the response body is a small JSON saying so; without it the
answer comes back in the body as usual. The frontend then copies a few hundred bytes per request
instead of the pixels (2.4-4.7 CPU ms per 786 kB tile on the 2-core test machine, 8-15 on the
H200 host: docs/performance.md, docs/gpu.md).

This is the idea of Triton's system shared-memory extension, with plain files: on Linux a folder
under ``/dev/shm`` keeps them in memory. Names are bare file names (letters, digits, ``.``,
``_``, ``-``; no folders, no leading dot); the worker opens only regular files in the folder and
never follows a symbolic link. Off unless ``shared_dir`` is set: anyone who can post to the
server and write to that folder can have it read and written there, so give the folder to the
clients that need it and no one else.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Optional

from handler.errors import RequestError

INPUT_HEADER = "X-GeoSeg-Shared-Input"
ANSWER_HEADER = "X-GeoSeg-Shared-Answer"
MAX_FILE_BYTES = 512 * 2 ** 20
"""Largest shared input file read: the ``max_request_size`` of config.properties, so that a
shared file is held to the limit a body is."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""A shared file's name: no folder, no leading dot, at most 200 characters."""


def _name(value: str, header: str) -> str:
    name = value.strip()
    if not NAME.fullmatch(name):
        raise RequestError(400, f"{header} must be a bare file name (letters, digits, '.', '_', "
                                f"'-'; no folders), got {value[:80]!r}", {"kind": "shared_name"})
    return name


class SharedFolder:
    """The ``shared_dir`` of the handler's settings: reads request files, writes answer files."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def read(self, value: str) -> bytes:
        """The bytes of file ``value`` (a bare name) in the folder; RequestError 400 when the
        name is not allowed or no such regular file is there. Read, not mapped: a client that
        shortens the file while the worker reads it cannot crash the worker."""
        name = _name(value, INPUT_HEADER)
        try:
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO: no wait
        except OSError as exc:
            raise RequestError(400, f"{INPUT_HEADER}: no readable file {name!r} in the server's "
                                    f"shared folder ({exc.strerror})",
                               {"kind": "shared_missing"}) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RequestError(400, f"{INPUT_HEADER}: {name!r} is not a regular file",
                                   {"kind": "shared_missing"})
            if info.st_size > MAX_FILE_BYTES:
                raise RequestError(413, f"{INPUT_HEADER}: {name!r} holds {info.st_size} bytes, "
                                        f"more than the {MAX_FILE_BYTES} a request may",
                                   {"kind": "too_large", "bytes": info.st_size})
            # a byte more than the size: a file grown since is cut there (a .npy is then
            # refused as corrupt; an image format's decoder reads what its header says)
            return read_up_to(fd, info.st_size + 1)
        finally:
            os.close(fd)

    def answer_name(self, value: Optional[str]) -> Optional[str]:
        """The answer file's name from the ``X-GeoSeg-Shared-Answer`` header (None: answer in
        the body); RequestError 400 for a name that is not allowed."""
        return None if value is None or not value.strip() else _name(value, ANSWER_HEADER)

    def write(self, name: str, body: bytes, content_type: str) -> bytes:
        """Write ``body`` to file ``name`` in the folder (a temporary file renamed into place,
        so a reader never sees half an answer); the small JSON response that says where.
        RequestError 500 when it cannot be written (folder gone, full, not writable)."""
        partial = self.folder / f".{name}.{os.getpid()}.partial"
        try:
            with open(partial, "wb") as out:
                out.write(body)
            os.replace(partial, self.folder / name)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise RequestError(500, f"{ANSWER_HEADER}: could not write {name!r} in the server's "
                                    f"shared folder ({exc.strerror})",
                               {"kind": "shared_write"}) from None
        return json.dumps({"answer_file": name, "bytes": len(body),
                           "content_type": content_type}).encode()


def read_up_to(fd: int, size: int) -> bytes:
    """At most ``size`` bytes from ``fd``, fewer only at its end. One buffer of exactly that
    size: a Python file's ``read(n)`` allocates ``n`` first, and for a limit of 512 MiB that is
    a fresh mapping whose pages the kernel zeroes on every request (12.6 MB read from /dev/shm
    on the 2-core test machine: 7.6 CPU ms per request against 1.4 this way)."""
    parts: list[bytes] = []  # one, unless a read stopped short of the end (a signal)
    got = 0
    while got < size and (more := os.read(fd, size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)  # a lone part comes back as it is, not copied


def shared_folder(path: str) -> Optional[SharedFolder]:
    """The handler's :class:`SharedFolder` for setting ``shared_dir`` (None when empty: off)."""
    return SharedFolder(path) if path else None


def not_shared_error() -> RequestError:
    """The 400 for a request that names a shared file to a server without a shared folder."""
    return RequestError(400, f"{INPUT_HEADER} / {ANSWER_HEADER}: this server has no shared folder "
                             "(model-config.yaml handler: shared_dir)", {"kind": "shared_off"})
