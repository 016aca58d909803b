"""Property: whatever bytes arrive, decoding returns an RGB image or a 4xx RequestError.

Valid PNG, JPEG, TIFF and GeoTIFF files are mutated (bytes overwritten, tails cut, chunks
repeated); any other exception would be a 500 or a crashed worker.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.decode import decode_image
from handler.errors import RequestError
from tests.helpers import SEEDS, mutate, mutation

LIMIT = 4_000_000


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
