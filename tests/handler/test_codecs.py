"""Decoders and encoders round-trip; every documented input fault maps to its status."""
import io
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from handler.decode import GEOTIFF_TAGS, decode_image, to_uint8
from handler.encode import FORMATS, class_summary, encode
from handler.errors import RequestError
from handler.request import choose_format, image_bytes
from model.class_table import ClassTable
from tests.helpers import bomb_png, geotiff_bytes, png_bytes, rgb_image, truncated

TABLE = ClassTable.load()
LIMIT = 10_000_000


def test_png_rgb_round_trip():
    img = rgb_image()
    decoded = decode_image(png_bytes(img), LIMIT)
    np.testing.assert_array_equal(decoded.rgb, img)
    assert decoded.kind == "png" and decoded.georef is None


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_other_modes_become_rgb(mode):
    im = Image.fromarray(rgb_image()).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    decoded = decode_image(buf.getvalue(), LIMIT)
    assert decoded.rgb.shape == (20, 30, 3) and decoded.rgb.dtype == np.uint8
    np.testing.assert_array_equal(decoded.rgb, np.asarray(im.convert("RGB")))


def test_jpeg_exif_orientation_is_applied():
    img = rgb_image(10, 40)
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(buf.getvalue(), LIMIT)
    assert decoded.rgb.shape == (40, 10, 3)


def test_16bit_tiff_is_stretched_per_band():
    bands = np.stack([np.linspace(1000, 5000, 600).reshape(20, 30)] * 3).astype(np.uint16)
    decoded = decode_image(geotiff_bytes(bands), LIMIT)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.min() == 0 and decoded.rgb.max() == 255
    assert np.all(np.diff(decoded.rgb[..., 0].reshape(-1).astype(int)) >= 0)  # order kept


def test_more_than_three_bands_take_the_first_three():
    bands = np.stack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30, 40)])
    decoded = decode_image(geotiff_bytes(bands), LIMIT)
    assert decoded.rgb[0, 0].tolist() == [10, 20, 30]


def test_float_band_with_nan_is_stretched():
    band = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    band[0, 0, 0] = np.nan
    out = to_uint8(band)
    assert out[0, 0, 0] == 0 and out.max() == 255


def test_geotiff_round_trip_keeps_georeferencing_byte_for_byte():
    data = geotiff_bytes(np.stack([rgb_image()[..., k] for k in range(3)]))
    decoded = decode_image(data, LIMIT)
    assert decoded.georef is not None and decoded.georef.pixel_area_m2 == pytest.approx(0.25)
    classes = np.random.default_rng(1).integers(0, 5, (20, 30), dtype=np.uint8)
    body, ctype = encode("geotiff", classes, decoded.rgb, TABLE,
                         decoded.georef)
    assert ctype == "image/tiff"
    with tifffile.TiffFile(io.BytesIO(data)) as src, tifffile.TiffFile(io.BytesIO(body)) as out:
        src_tags = {t.code: (t.dtype, t.count, t.value) for t in src.pages[0].tags.values()
                    if t.code in GEOTIFF_TAGS}
        out_tags = {t.code: (t.dtype, t.count, t.value) for t in out.pages[0].tags.values()
                    if t.code in GEOTIFF_TAGS}
        assert src_tags and out_tags == src_tags
        np.testing.assert_array_equal(out.asarray(), classes)
        colormap = out.pages[0].colormap
        assert (colormap[:, 1] // 257).tolist() == list(TABLE.colors[1])


def test_palette_png_holds_class_ids_and_colours():
    classes = np.random.default_rng(2).integers(0, 5, (17, 23), dtype=np.uint8)
    body, ctype = encode("png", classes, rgb_image(17, 23), TABLE, None)
    assert ctype == "image/png"
    with Image.open(io.BytesIO(body)) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), classes)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), TABLE.colorize(classes))


def test_json_summary_counts_fractions_and_areas():
    data = geotiff_bytes(np.zeros((3, 4, 5), np.uint8))
    georef = decode_image(data, LIMIT).georef
    classes = np.array([[0] * 5, [1] * 5, [1] * 5, [4] * 5], dtype=np.uint8)
    body, ctype = encode("json", classes, np.zeros((4, 5, 3), np.uint8), TABLE, georef)
    summary = json.loads(body)
    assert ctype == "application/json"
    building = summary["classes"][1]
    assert building["pixels"] == 10 and building["fraction"] == 0.5
    assert building["area_m2"] == pytest.approx(2.5)  # 10 px of 0.5 m x 0.5 m
    assert sum(c["pixels"] for c in summary["classes"]) == 20
    assert class_summary(classes, TABLE, None)["classes"][1]["area_m2"] is None


def test_overlay_is_a_jpeg_of_input_size():
    body, ctype = encode("overlay", np.zeros((7, 9), np.uint8), rgb_image(7, 9), TABLE, None)
    assert ctype == "image/jpeg"
    with Image.open(io.BytesIO(body)) as im:
        assert im.format == "JPEG" and im.size == (9, 7)


def status_of(data: bytes, limit: int = LIMIT) -> int:
    with pytest.raises(RequestError) as info:
        decode_image(data, limit)
    return info.value.status


@pytest.mark.parametrize("name, data, status", [
    ("empty", b"", 400),
    ("text", b"hello, this is not an image", 415),
    ("random bytes", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), 415),
    ("truncated png", truncated(png_bytes(rgb_image(64, 64))), 400),
    ("truncated jpeg", truncated(png_bytes(rgb_image(64, 64), format="JPEG")), 400),
    ("truncated tiff", truncated(geotiff_bytes(np.zeros((3, 64, 64), np.uint8) + 7)), 400),
    ("decompression bomb", bomb_png(), 413),
])
def test_input_faults_map_to_status(name, data, status):
    assert status_of(data) == status


def test_pixel_limit_gives_413_before_decoding():
    assert status_of(png_bytes(rgb_image(100, 100)), limit=9_999) == 413
    assert decode_image(png_bytes(rgb_image(100, 100)), 10_000).rgb.shape == (100, 100, 3)


def test_one_pixel_image_is_fine():
    assert decode_image(png_bytes(rgb_image(1, 1)), LIMIT).rgb.shape == (1, 1, 3)


def test_request_fields():
    assert image_bytes({"body": bytearray(b"abc")}) == b"abc"
    assert image_bytes({"file": b"abc", "format": b"json"}) == b"abc"
    for row, status in [({"image": b"x"}, 400), ({"file": b"x", "file2": b"y"}, 400),
                        ({"body": {"a": 1}}, 415)]:
        with pytest.raises(RequestError) as info:
            image_bytes(row)
        assert info.value.status == status
    # TorchServe keeps the last of two same-named parts: the declared length gives it away.
    form = {"file": b"x" * 3000, "format": "json"}
    assert image_bytes(form, "multipart/form-data", str(3000 + 4 + 600)) == b"x" * 3000
    with pytest.raises(RequestError) as info:
        image_bytes(form, "multipart/form-data", str(3000 + 20000 + 4 + 900))
    assert info.value.detail["kind"] == "repeated_field"
    with pytest.raises(RequestError) as info:
        image_bytes({"\x89PNG": b"x"}, "application/x-www-form-urlencoded")
    assert info.value.status == 415 and "curl -T" in info.value.message


@pytest.mark.parametrize("row, header, accept, expected", [
    ({}, None, None, "png"),
    ({}, None, "*/*", "png"),
    ({}, None, "image/tiff", "geotiff"),
    ({}, None, "application/json, image/png;q=0.5", "json"),
    ({}, "overlay", "image/png", "overlay"),
    ({"format": b"JSON"}, "overlay", "image/png", "json"),
    ({"format": "tif"}, None, None, "geotiff"),
])
def test_format_choice(row, header, accept, expected):
    assert choose_format(row, header, accept) == expected
    assert expected in FORMATS


def test_every_format_of_the_table_is_reachable_by_name_alias_and_accept_type():
    """One table (handler.encode.FORMATS) decides names, aliases, Accept types and content
    types: each way of asking reaches its format, and the answer carries its content type."""
    classes = np.zeros((8, 8), np.uint8)
    rgb = np.zeros((8, 8, 3), np.uint8)
    table = ClassTable.load()
    for name, fmt in FORMATS.items():
        for asked in (name, *fmt.aliases):
            assert choose_format({"format": asked.upper()}, None, None) == name
        for mime in fmt.accept:
            assert choose_format({}, None, mime) == name
        body, content_type = encode(name, classes, rgb, table, None)
        assert content_type == fmt.content_type and body


def test_unknown_formats_are_refused():
    with pytest.raises(RequestError) as info:
        choose_format({"format": b"bmp"}, None, None)
    assert info.value.status == 400
    with pytest.raises(RequestError) as info:
        choose_format({}, None, "text/html")
    assert info.value.status == 406
    body = json.loads(info.value.body())
    assert body["code"] == 406 and "text/html" in body["error"]
