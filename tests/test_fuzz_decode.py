"""Property: whatever bytes arrive, decoding returns an RGB image or a 4xx RequestError.

Valid PNG, JPEG, TIFF and GeoTIFF files are mutated (bytes overwritten, tails cut, chunks
repeated); any other exception would be a 500 or a crashed worker.
"""
import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from handler.decode import decode_image
from handler.errors import RequestError
from tests.test_codecs import geotiff_bytes

LIMIT = 4_000_000


def _seeds() -> list[bytes]:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = []
    for fmt, extra in (("PNG", {}), ("JPEG", {"quality": 90}), ("TIFF", {}),
                       ("TIFF", {"compression": "tiff_lzw"}), ("GIF", {})):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, **extra)
        out.append(buf.getvalue())
    out.append(geotiff_bytes(np.moveaxis(rgb, -1, 0).copy()))
    return out


SEEDS = _seeds()

mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(b"")),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 20), st.just(b"")),
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, value in ops:
        if not b:
            break
        pos %= len(b)
        if kind == "set":
            b[pos:pos + len(value)] = value
        elif kind == "cut":
            del b[pos:]
        else:
            b[pos:pos] = b[pos:pos + 64]
    return bytes(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_images_decode_or_are_refused_with_4xx(seed, ops):
    data = mutate(SEEDS[seed], ops)
    try:
        decoded = decode_image(data, LIMIT)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        return
    h, w, c = decoded.rgb.shape
    assert c == 3 and h * w <= LIMIT and decoded.rgb.dtype == np.uint8
