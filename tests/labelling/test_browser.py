"""The labelling page in a real browser: Debian's chromium, headless, driven by Playwright.

Opens `geoseg label`'s page on a small GeoTIFF (blue left half, sand right half), clicks points of
two classes, checks the GeoPackage after each step (CRS, class field, coordinates within a pixel),
deletes one with shift-click, paints the quick map and checks the screenshot's pixels, asks for
suggestions, trains the network from the page (a real, very short `geoseg train`) and waits for
its map, and checks that a stopped server is said on the page. Fails (never skips) when the
browser is missing: `make setup` installs it.
"""
from __future__ import annotations

import io
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from labelling.app import LabellingApp, TrainingSettings
from labelling.server import serve_in_thread
from labelling.store import CLASS_FIELD
from model.class_table import ClassTable
from tests.labelling.rasters import PIXEL_M, pixel_centre, two_halves
from tools.figure_label import CHROMIUM, FLAGS
from training.points.layer import read_point_layer

pytestmark = pytest.mark.integration  # starts a browser and a short training

TABLE = ClassTable(("water", "sand"), ((40, 100, 220), (230, 200, 60)))
LEFT = [(40, 50), (150, 80), (260, 120)]
RIGHT = [(40, 330), (150, 300), (260, 360)]


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium "
                    "(apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: `make setup` installs requirements.txt")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        yield page
        browser.close()


def screen_of(page, row: float, col: float) -> tuple[float, float]:
    """Page coordinates of raster pixel (row, col)'s centre."""
    x, y = page.evaluate(f"labelling.toScreen({row + 0.5}, {col + 0.5})")
    box = page.locator("#view").bounding_box()
    return box["x"] + x, box["y"] + y


def saved(layer) -> list[tuple[str, float, float]]:
    return [(f.value, f.x, f.y) for f in read_point_layer(layer, CLASS_FIELD).features]


def test_click_points_see_the_quick_map_and_nothing_is_lost(browser_page, tmp_path):
    page = browser_page
    raster = two_halves(tmp_path / "ortho.tif")
    layer = tmp_path / "clicks.gpkg"
    app = LabellingApp([raster], layer, TABLE, training=TrainingSettings(
        epochs=1, steps_per_epoch=2, extra=("--batch-size", "2", "--crop-size", "128")))
    server, _ = serve_in_thread(app)
    host, port = server.server_address[:2]
    try:
        page.goto(f"http://{host}:{port}/")
        page.wait_for_function("window.labelling && window.labelling.ready()")
        for class_button, spots in (("#class-0", LEFT), ("#class-1", RIGHT)):
            page.click(class_button)
            for row, col in spots:
                page.mouse.click(*screen_of(page, row, col))
                page.wait_for_function("document.getElementById('status').textContent"
                                       ".startsWith('saved')")
                page.evaluate("document.getElementById('status').textContent = ''")
        points = saved(layer)
        assert read_point_layer(layer, CLASS_FIELD).crs.to_epsg() == 32640
        assert [p[0] for p in points] == ["water"] * 3 + ["sand"] * 3
        for (_, x, y), (row, col) in zip(points, LEFT + RIGHT):
            ex, ey = pixel_centre(row, col)
            assert abs(x - ex) <= PIXEL_M and abs(y - ey) <= PIXEL_M

        page.keyboard.down("Shift")  # shift-click deletes the nearest point
        page.mouse.click(*screen_of(page, *RIGHT[2]))
        page.keyboard.up("Shift")
        page.wait_for_function("document.getElementById('status').textContent === 'point deleted'")
        assert [p[0] for p in saved(layer)] == ["water"] * 3 + ["sand"] * 2

        page.evaluate("const o = document.getElementById('opacity'); o.value = 100;"
                      "o.dispatchEvent(new Event('input'))")
        page.click("#quickmap")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('quick map')", timeout=60_000)
        shot = np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB"))
        left_x, top_y = screen_of(page, 200, 20)
        right_x, _ = screen_of(page, 200, 380)
        box = page.locator("#view").bounding_box()
        y = int(top_y - box["y"])
        patch_left = shot[y - 5:y + 5, int(left_x - box["x"]) - 5:int(left_x - box["x"]) + 5]
        patch_right = shot[y - 5:y + 5, int(right_x - box["x"]) - 5:int(right_x - box["x"]) + 5]
        assert np.abs(patch_left.astype(int) - TABLE.colors[0]).max() <= 3
        assert np.abs(patch_right.astype(int) - TABLE.colors[1]).max() <= 3

        page.click("#suggest")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('suggested places')", timeout=60_000)
        assert "10 suggested places" in page.text_content("#status")

        assert page.text_content("#job") == "no GeoSeg model yet"
        page.click("#train")  # a real geoseg train (1 epoch x 2 steps), export and predict
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('GeoSeg map of ortho')", timeout=240_000)
        assert page.text_content("#job").startswith("training done in")
        assert app.model is not None and app.model.is_file()

        server.shutdown()
        server.server_close()
        page.mouse.click(*screen_of(page, 100, 200))
        page.wait_for_function("document.getElementById('status').classList.contains('error')")
        assert "does not answer" in page.text_content("#status")
        assert len(saved(layer)) == 5  # what was saved stays saved
    finally:
        server.shutdown()
        app.close()
