"""``geoseg label``: click points of land-cover classes on rasters in a local web page.

    geoseg label ortho.tif [more.tif ...] --points clicks.gpkg [--classes table.json]

opens http://127.0.0.1:8765/ (``--port``; loopback only). Pick a class, click the photo: each
click is saved at once in the GeoPackage (class name in the field ``landcover``, the raster's
name in ``image``, the rasters' CRS), so nothing is lost when the page or the command stops, and
reopening the same layer continues. Shift-click deletes a point, dragging one moves it.
"Quick map" paints the map of a pixel-feature forest fitted on the clicks so far, evened out
within the photo's regions (seconds on a CPU; not the GeoSeg network), "Suggest" marks where the next clicks would help most. "Train
GeoSeg" runs ``geoseg train --images RASTERS --points clicks.gpkg --class-field landcover`` in the
background (MobileNetV3, ``--epochs`` x ``--steps-per-epoch``; runs, maps and logs go to
``clicks-geoseg/`` beside the layer), exports it and shows its map; "GeoSeg map" maps the raster
with ``--model`` or the last model trained.

The HTTP layer here is Python's own ``http.server`` (a page for one user on loopback needs no
framework); the logic is ``labelling.app``.
"""
from __future__ import annotations

import json
import mimetypes
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from common.cli import at_least, fail, parser
from labelling.app import LabellingApp, PageError, TrainingSettings
from labelling.store import StoreError
from model.class_table import ClassTable, ClassTableError
from scene.source import SceneError, list_rasters

STATIC = Path(__file__).with_name("static")
DEFAULT_PORT = 8765
DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "model" / "classes.json"
MAX_BODY = 65_536

TILE_PATH = re.compile(r"^/api/tile/([^/]+)/(\d+)/(\d+)/(\d+)\.png$")
CLICK_PATH = re.compile(r"^/api/clicks/(\d+)$")
MAP_PATH = re.compile(r"^/api/map/([^/]+)\.png$")
MODEL_MAP_PATH = re.compile(r"^/api/model-map/([^/]+)\.png$")


class PageHandler(BaseHTTPRequestHandler):
    """Routes: ``GET /`` and ``/static/*`` (the page), ``GET /api/state``, ``GET
    /api/tile/NAME/L/X/Y.png``, ``POST /api/clicks``, ``PUT`` / ``DELETE /api/clicks/ID``, ``GET
    /api/map/NAME.png`` (the quick map; seconds in ``X-Seconds``), ``GET
    /api/suggest?image=NAME&count=K``, ``POST /api/train?image=NAME`` and ``POST
    /api/model-map?image=NAME`` (background jobs), ``GET /api/job`` (their progress), ``GET
    /api/model-map/NAME.png``. Errors answer JSON ``{"error": "..."}``."""

    app: LabellingApp
    server_version = "geoseg-label"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Quiet: the terminal shows only what the user needs."""

    def _send(self, status: int, body: bytes, kind: str, headers: Optional[dict[str, str]] = None
              ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise PageError(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            raise PageError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise PageError(400, "the body must be a JSON object")
        return data

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        try:
            self._route(method, url.path, parse_qs(url.query))
        except PageError as exc:
            self._json({"error": exc.message}, exc.status)
        except StoreError as exc:
            self._json({"error": str(exc)}, 409)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        app = self.app
        if method == "GET":
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/api/state":
                return self._json(app.state())
            if match := TILE_PATH.match(path):
                name, level, tx, ty = match.groups()
                return self._send(200, app.tile(name, int(level), int(tx), int(ty)), "image/png")
            if match := MAP_PATH.match(path):
                png, seconds, step = app.quick_map(match.group(1))
                return self._send(200, png, "image/png",
                                  {"X-Seconds": f"{seconds:.2f}", "X-Step": str(step)})
            if match := MODEL_MAP_PATH.match(path):
                png, step = app.model_map(match.group(1))
                return self._send(200, png, "image/png", {"X-Step": str(step)})
            if path == "/api/job":
                return self._json(app.job.status())
            if path == "/api/suggest":
                count = query.get("count", ["10"])[0]
                if not count.isdigit():
                    raise PageError(400, "count must be a whole number")
                return self._json(app.suggest(query.get("image", [""])[0], int(count)))
        elif method == "POST" and path == "/api/clicks":
            return self._json(app.add(self._body()), 201)
        elif method == "POST" and path in ("/api/train", "/api/model-map"):
            image = query.get("image", [""])[0]
            started = app.start_training(image) if path == "/api/train" else app.start_model_map(image)
            return self._json(started, 202)
        elif method in ("PUT", "DELETE") and (match := CLICK_PATH.match(path)):
            click_id = int(match.group(1))
            if method == "PUT":
                return self._json(app.move(click_id, self._body()))
            app.delete(click_id)
            return self._json({"deleted": click_id})
        raise PageError(404, f"no {method} {path}")

    def _static(self, name: str) -> None:
        path = (STATIC / name).resolve()
        if STATIC.resolve() not in path.parents or not path.is_file():
            raise PageError(404, f"no file {name}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), kind)

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def make_server(app: LabellingApp, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` on 127.0.0.1:``port`` (0: a free port); not yet serving."""
    handler = type("BoundPageHandler", (PageHandler,), {"app": app})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(app: LabellingApp, port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """``make_server`` serving in a daemon thread (for tests and notebooks)."""
    server = make_server(app, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def main(argv: list[str] | None = None) -> int:
    p = parser("geoseg label", __doc__)
    p.add_argument("rasters", nargs="+", help="GeoTIFFs (or folders / patterns) to label")
    p.add_argument("--points", type=Path, required=True,
                   help="GeoPackage of the clicks: created, or continued when it exists")
    p.add_argument("--classes", type=Path, default=DEFAULT_TABLE, help="class table JSON")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (0: any free)")
    p.add_argument("--model", type=Path, default=None,
                   help="an exported GeoSeg model (.pt or .onnx) whose maps the page can show")
    p.add_argument("--epochs", type=at_least(1), default=TrainingSettings.epochs,
                   help="epochs of the page's Train button")
    p.add_argument("--steps-per-epoch", type=at_least(1), default=TrainingSettings.steps_per_epoch,
                   help="steps per epoch of the page's Train button")
    args = p.parse_args(argv)
    if args.points.suffix.lower() != ".gpkg":
        return fail(f"{args.points}: the clicks are saved as a GeoPackage; name it *.gpkg")
    try:
        table = ClassTable.load(args.classes)
        if args.model is not None and not args.model.is_file():
            return fail(f"--model {args.model}: no such file")
        app = LabellingApp(list_rasters(args.rasters), args.points, table, model=args.model,
                           training=TrainingSettings(epochs=args.epochs,
                                                     steps_per_epoch=args.steps_per_epoch))
    except (ClassTableError, SceneError, StoreError, OSError) as exc:
        return fail(str(exc))
    try:
        server = make_server(app, args.port)
    except OSError as exc:
        app.close()
        return fail(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); try --port 0")
    port = server.server_address[1]
    print(f"labelling {len(app.views)} raster(s), {len(app.store.all())} clicks so far in "
          f"{args.points}\nopen http://127.0.0.1:{port}/  (Ctrl-C to stop; every click is saved "
          f"as it is made)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped; the clicks are in", args.points)
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
