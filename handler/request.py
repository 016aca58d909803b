"""What a request asks for: its image bytes and its output format.

TorchServe 0.12 hands a raw body (``curl -T`` / ``--data-binary``) to the handler as the row
key ``body``, a multipart form field by field (``-F file=@x.tif -F format=json``: keys ``file``
and ``format``). The format is chosen by, in order: the multipart ``format`` field, the
``X-GeoSeg-Format`` header, the ``Accept`` header; default ``png``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from handler.decode import DecodedImage
from handler.errors import RequestError

FORMAT_NAMES = ("png", "geotiff", "json", "overlay")
FORMAT_ALIASES = {"tiff": "geotiff", "tif": "geotiff", "jpeg": "overlay", "jpg": "overlay"}
ACCEPT_TYPES = {"image/png": "png", "image/tiff": "geotiff", "image/geotiff": "geotiff",
                "application/json": "json", "image/jpeg": "overlay", "*/*": "png",
                "image/*": "png"}
FORM_FIELDS = {"file", "format"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


URLENCODED_HELP = ("form-urlencoded bodies (curl's --data-binary default) do not reach the model: "
                   "send the raw image with `curl -T` or a Content-Type such as image/png or "
                   "application/octet-stream, or as multipart field 'file'")


def _field_names(names: list[str]) -> str:
    shown = [n if n.isprintable() and len(n) <= 40 else "<binary>" for n in names[:5]]
    return ", ".join(dict.fromkeys(shown)) or "none"


def image_bytes(row: Mapping[str, Any], content_type: Optional[str] = None) -> bytes:
    """The image of one request row; RequestError(400/415) for a missing or wrong field."""
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


@dataclass
class Job:
    """One decoded request: its index in the batch, its image and the format it asked for."""

    index: int
    image: DecodedImage
    fmt: str
