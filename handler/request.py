"""What a request asks for: its image bytes and its output format.

TorchServe 0.12 hands a raw body (``curl -T`` / ``--data-binary``) to the handler as the row
key ``body``, a multipart form field by field (``-F file=@x.tif -F format=json``: keys ``file``
and ``format``). The format is chosen by, in order: the multipart ``format`` field, the
``X-GeoSeg-Format`` header, the ``Accept`` header; default ``png`` (``npy`` for a stack of
images, the bulk format's 4-D ``.npy``, which no other format can answer). The ``X-GeoSeg-Edges``
header says how the image's borders get context: ``reflect`` (default, the image is a whole
scene: reflected by half the tile overlap) or ``none`` (the image is a window of a larger scene
that already carries its neighbours' pixels, as ``geoseg predict --server`` sends).

TorchServe merges multipart parts of the same name before the handler sees them (the last one
wins), so a form with two ``file`` parts would silently be answered for one of them. The
handler compares the request's ``Content-Length`` with the bytes that arrived: a body larger
than those plus :data:`PART_OVERHEAD` per part held another part, and is refused with 400
(a lost part of less than a few KiB stays unnoticed; images are larger).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from handler.decode import DecodedImage
from handler.encode import FORMATS
from handler.errors import RequestError

FORMAT_NAMES = tuple(FORMATS)
FORMAT_ALIASES = {alias: f.name for f in FORMATS.values() for alias in f.aliases}
ACCEPT_TYPES = {mime: f.name for f in FORMATS.values() for mime in f.accept}
FORM_FIELDS = {"file", "format"}
DEFAULT_FORMAT = "png"
"""The answer's format when a request names none (a stack of images: always ``npy``)."""
PART_OVERHEAD = 2048
"""Bytes one multipart part may spend on its boundary and headers (name, filename, type)."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


URLENCODED_HELP = ("form-urlencoded bodies (curl's --data-binary default) do not reach the model: "
                   "send the raw image with `curl -T` or a Content-Type such as image/png or "
                   "application/octet-stream, or as multipart field 'file'")


def _field_names(names: list[str]) -> str:
    shown = [n if n.isprintable() and len(n) <= 40 else "<binary>" for n in names[:5]]
    return ", ".join(dict.fromkeys(shown)) or "none"


def _value_size(value: Any) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return len(_text(value).encode("utf-8"))


def check_no_merged_parts(row: Mapping[str, Any], content_length: Optional[str]) -> None:
    """Refuse (400) a multipart body whose declared length shows parts TorchServe merged away.

    ``content_length``: the request's ``Content-Length`` header in bytes (absent for chunked
    bodies, which are not checked).
    """
    if not content_length or not content_length.strip().isdigit():
        return
    arrived = sum(_value_size(v) for v in row.values() if v is not None)
    if int(content_length) > arrived + PART_OVERHEAD * (len(row) + 1):
        raise RequestError(400, "the multipart body holds more parts than arrived (two 'file' "
                                "parts?): send exactly one 'file' and optionally 'format'",
                           {"kind": "repeated_field", "content_length": int(content_length),
                            "received_bytes": arrived})


def image_bytes(row: Mapping[str, Any], content_type: Optional[str] = None,
                content_length: Optional[str] = None) -> bytes:
    """The image of one request row; RequestError(400/415) for a missing, repeated or wrong
    field. ``content_type`` / ``content_length``: the request's headers, when known."""
    if content_type and content_type.split(";")[0].strip().lower() == \
            "application/x-www-form-urlencoded":
        raise RequestError(415, URLENCODED_HELP, {"kind": "urlencoded_body"})
    if "body" in row or "data" in row:
        value = row.get("body", row.get("data"))
    else:
        unknown = sorted(set(row) - FORM_FIELDS)
        if "file" not in row:
            raise RequestError(400, "no image: send it as the raw body or as the multipart "
                                    f"field 'file' (got fields: {_field_names(unknown)})",
                               {"kind": "missing_file"})
        if unknown:
            raise RequestError(400, f"unexpected multipart fields {_field_names(unknown)}: "
                                    "send one 'file' and optionally 'format'",
                               {"kind": "unexpected_field"})
        check_no_merged_parts(row, content_length)
        value = row["file"]
    if value is None:
        raise RequestError(400, "empty request body: send an image", {"kind": "empty"})
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise RequestError(415, "expected image bytes, got a JSON document", {"kind": "not_image"})


def normalise_format(name: str) -> str:
    key = name.strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key not in FORMAT_NAMES:
        raise RequestError(400, f"unknown output format {name!r}: choose one of "
                                f"{', '.join(FORMAT_NAMES)}", {"kind": "unknown_format"})
    return key


EDGE_MODES = {"reflect": None, "none": 0}
"""``X-GeoSeg-Edges`` value -> margin for the tiling (None: the default reflected margin)."""


def choose_margin(header: Optional[str]) -> Optional[int]:
    """The tiling margin asked for by the ``X-GeoSeg-Edges`` header (absent: reflect)."""
    if header is None or not header.strip():
        return None
    key = header.strip().lower()
    if key not in EDGE_MODES:
        raise RequestError(400, f"unknown X-GeoSeg-Edges value {header!r}: choose "
                                f"{' or '.join(EDGE_MODES)}", {"kind": "unknown_edges"})
    return EDGE_MODES[key]


def choose_format(row: Mapping[str, Any], header: Optional[str], accept: Optional[str],
                  default: Optional[str] = DEFAULT_FORMAT) -> Optional[str]:
    """The output format: form field ``format``, else ``header``, else ``accept``, else
    ``default`` (None: the caller decides once it knows the image)."""
    if row.get("format") is not None:
        return normalise_format(_text(row["format"]))
    if header:
        return normalise_format(header)
    if not accept:
        return default
    for part in accept.split(","):
        mime = part.split(";")[0].strip().lower()
        if mime == "*/*":  # anything will do: the default for this image
            return default
        if mime in ACCEPT_TYPES:
            return ACCEPT_TYPES[mime]
    raise RequestError(406, f"cannot answer with {accept!r}: accepted are "
                            f"{', '.join(sorted(ACCEPT_TYPES))}", {"kind": "not_acceptable"})


def stack_format(asked: Optional[str], count: int) -> str:
    """The format of a stack of ``count`` images: ``npy``, the only one that holds a stack of
    class maps; RequestError 400 when the request asked for another."""
    if asked not in (None, "npy"):
        raise RequestError(400, f"a stack of {count} images (a 4-D .npy) is answered as one "
                                f"(N, H, W) .npy of class ids, not {asked}: ask for npy or "
                                "send the images one by one", {"kind": "stack_format"})
    return "npy"


@dataclass
class Job:
    """One decoded request: its index in the batch, its image, the format it asked for, the
    tiling margin at its borders (None: the default reflection) and the shared file its answer
    goes to (None: the response body; :mod:`handler.shared`)."""

    index: int
    image: DecodedImage
    fmt: str
    margin: Optional[int] = None
    answer_file: Optional[str] = None
