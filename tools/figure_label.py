"""The README's picture of the labelling page: a dubai-aerial photo as a GeoTIFF, a few clicks
per class (taken from its mask, as a user would place them), the quick map and suggestions, shot
in headless Debian chromium.

    python -m tools.figure_label --data ../shared/data/dubai-aerial --photo tile5/images/image_part_003.jpg \\
        --out docs/label-page.png
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from common.cli import fail, parser
from labelling.app import LabellingApp
from labelling.server import serve_in_thread
from model.class_table import ClassTable
from training.points.files import simulate_points
from training.points.simulated import write_geotiff

CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium (``make setup`` installs it); no browser is downloaded."""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
"""Headless chromium as root on a machine without network: no sandbox, no GPU, no background
connections (which a closed network refuses many at a time)."""


def photo_as_geotiff(photo: Path, out: Path) -> np.ndarray:
    """Write ``photo`` as a GeoTIFF in UTM 40N, 0.5 m pixels (``training.points.simulated``'s
    writer, image slot 0); return its (H, W, 3) pixels."""
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    write_geotiff(out, np.moveaxis(rgb, -1, 0), 0)
    return rgb


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m tools.figure_label", __doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--photo", default="tile5/images/image_part_003.jpg")
    p.add_argument("--classes", type=Path, default=Path("training/tables/dubai-aerial.json"))
    p.add_argument("--clicks-per-class", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("docs/label-page.png"))
    args: argparse.Namespace = p.parse_args(argv)
    photo = (args.data / args.photo).resolve()
    mask_path = Path(str(photo).replace("/images/", "/masks/")).with_suffix(".png")
    if not photo.is_file() or not mask_path.is_file():
        return fail(f"{photo} or its mask {mask_path} is missing")
    from playwright.sync_api import sync_playwright

    table = ClassTable.load(args.classes)
    mask = table.mask_from_colors(np.asarray(Image.open(mask_path).convert("RGB")))
    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the page shows the layer's path as given: "clicks.gpkg"
        raster = Path("ortho.tif")
        photo_as_geotiff(photo.resolve(), raster)
        app = LabellingApp([raster], Path("clicks.gpkg"), table)
        for row, col, class_id in simulate_points(mask, args.clicks_per_class, 0).tolist():
            app.add({"image": "ortho", "row": row, "col": col, "class_id": class_id})
        server, _ = serve_in_thread(app)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                page.wait_for_function("window.labelling && window.labelling.ready()")
                page.click("#quickmap")
                page.wait_for_function("document.getElementById('status').textContent"
                                       ".startsWith('quick map')", timeout=120_000)
                quick = page.text_content("#status")
                page.click("#suggest")
                page.wait_for_function("document.getElementById('status').textContent"
                                       ".includes('suggested places')", timeout=120_000)
                page.evaluate(f"document.getElementById('status').textContent = {quick!r}")
                page.wait_for_timeout(500)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            server.shutdown()
            app.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
