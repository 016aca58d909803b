"""What a request asks for: its image bytes and its output format.

TorchServe 0.12 hands a raw body (``curl -T`` / ``--data-binary``) to the handler as the row
key ``body``, a multipart form field by field (``-F file=@x.tif -F format=json``: keys ``file``
and ``format``). The format is chosen by, in order: the multipart ``format`` field, the
``X-GeoSeg-Format`` header, the ``Accept`` header; default ``png``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from handler.errors import RequestError

FORMAT_NAMES = ("png", "geotiff", "json", "overlay")
FORMAT_ALIASES = {"tiff": "geotiff", "tif": "geotiff", "jpeg": "overlay", "jpg": "overlay"}
ACCEPT_TYPES = {"image/png": "png", "image/tiff": "geotiff", "image/geotiff": "geotiff",
                "application/json": "json", "image/jpeg": "overlay", "*/*": "png",
                "image/*": "png"}
FORM_FIELDS = {"file", "format"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def image_bytes(row: Mapping[str, Any]) -> bytes:
    """The image of one request row; RequestError(400/415) for a missing or wrong field."""
    if "body" in row or "data" in row:
        value = row.get("body", row.get("data"))
    else:
        unknown = sorted(set(row) - FORM_FIELDS)
        if "file" not in row:
            raise RequestError(400, "no image: send it as the raw body or as the multipart "
                                    f"field 'file' (got fields: {', '.join(unknown) or 'none'})",
                               {"kind": "missing_file"})
        if unknown:
            raise RequestError(400, f"unexpected multipart fields {', '.join(unknown)}: send "
                                    "one 'file' and optionally 'format'",
                               {"kind": "unexpected_field"})
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


def choose_format(row: Mapping[str, Any], header: Optional[str], accept: Optional[str]) -> str:
    """The output format: form field ``format``, else ``header``, else ``accept``, else png."""
    if row.get("format") is not None:
        return normalise_format(_text(row["format"]))
    if header:
        return normalise_format(header)
    if not accept:
        return "png"
    for part in accept.split(","):
        mime = part.split(";")[0].strip().lower()
        if mime in ACCEPT_TYPES:
            return ACCEPT_TYPES[mime]
    raise RequestError(406, f"cannot answer with {accept!r}: accepted are "
                            f"{', '.join(sorted(ACCEPT_TYPES))}", {"kind": "not_acceptable"})
