"""Errors a user can cause, each with its HTTP status and a JSON body."""
from __future__ import annotations

import json
from typing import Any, Optional


class RequestError(Exception):
    """A request the service refuses: ``status`` (4xx; 500 when the answer file a request
    asked for cannot be written), a one-line ``message``, ``detail``."""

    def __init__(self, status: int, message: str, detail: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail or {}

    def body(self) -> bytes:
        """``{"code": status, "error": message, "detail": {...}}`` as UTF-8 JSON."""
        return json.dumps({"code": self.status, "error": self.message,
                           "detail": self.detail}).encode()


REASON_PHRASES = {400: "Bad Request", 406: "Not Acceptable", 413: "Payload Too Large",
                  415: "Unsupported Media Type", 422: "Unprocessable Entity",
                  500: "Internal Server Error"}
