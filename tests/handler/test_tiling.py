import numpy as np
import pytest
import torch

from handler.tiling import axis_spans, class_ids, plan_tiles, segment_images
from tests.standins import ColourRule
from training.data.synthetic import generate_scene


def identity(batch: np.ndarray) -> np.ndarray:
    """'Model' whose classes are the red channel: stitching must give the input back."""
    return batch[..., 0].copy()


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (5, 1), (31, 31), (32, 32), (33, 70),
                                  (97, 45), (100, 257), (129, 128), (64, 1)])
@pytest.mark.parametrize("tile, overlap", [(32, 8), (32, 0), (17, 5)])
def test_identity_model_reproduces_input_exactly(h, w, tile, overlap):
    rng = np.random.default_rng(h * 1000 + w)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    (out,) = segment_images([image], identity, tile, overlap, micro_batch=3)
    assert out.shape == (h, w) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image[..., 0])


def test_kept_regions_cover_each_pixel_once():
    for length in (1, 50, 64, 65, 200, 513):
        spans = axis_spans(length, 64, 16)
        covered = np.zeros(length, int)
        for start, (a, b) in spans:
            assert start <= a < b <= start + 64
            covered[a:b] += 1
        assert np.all(covered == 1)


def test_each_tile_keeps_at_least_half_the_overlap_from_its_inner_borders():
    for start, (a, b) in axis_spans(1000, 128, 32)[1:-1]:
        assert a - start >= 16 and start + 128 - b >= 16


def test_convolutional_model_tiled_equals_untiled_away_from_border():
    model = ColourRule().eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            return model(x)["out"].argmax(1).to(torch.uint8).numpy()

    image, _ = generate_scene((150, 190), seed=4)
    tiled = segment_images([image], predict, tile=40, overlap=8, micro_batch=5)[0]
    untiled = predict(image[None])[0]
    assert len(np.unique(untiled)) > 2  # the comparison is not trivial
    np.testing.assert_array_equal(tiled[1:-1, 1:-1], untiled[1:-1, 1:-1])


def test_tiles_of_several_images_share_micro_batches():
    sizes = []

    def predict(batch):
        sizes.append(len(batch))
        return batch[..., 0].copy()

    images = [np.full((40, 40, 3), k, np.uint8) for k in (1, 2, 3)]
    outs = segment_images(images, predict, tile=32, overlap=8, micro_batch=8)
    assert [int(o.mean()) for o in outs] == [1, 2, 3]
    assert sizes == [8, 8]  # 3 images x 4 tiles pooled into micro-batches of 8, the last padded


def test_bad_tiling_parameters_are_refused():
    with pytest.raises(ValueError):
        plan_tiles(10, 10, 16, 16)


@pytest.mark.parametrize("classes", [1, 2, 5, 17, 256])
def test_class_ids_are_numpys_argmax_ties_included(classes):
    rng = np.random.default_rng(classes)
    scores = rng.integers(0, 4, size=(classes, 37, 53)).astype(np.float32)  # many exact ties
    scores[:, 0, 0] = 1.0  # every class tied: the first one wins
    ids = class_ids(scores)
    assert ids.dtype == np.uint8 and ids.shape == (37, 53)
    np.testing.assert_array_equal(ids, scores.argmax(0))
    assert ids[0, 0] == 0


def softmax_rule(batch: np.ndarray) -> np.ndarray:
    """(B, t, t, 3) -> (B, 3, t, t) float32 'probabilities' from the colour channels, with exact
    ties wherever two channels are equal (a blended map must still break them the same way)."""
    x = (batch.astype(np.float32) // 64).transpose(0, 3, 1, 2) + 1.0
    return x / x.sum(1, keepdims=True)


def test_lone_tiles_take_the_device_argmax_and_give_the_same_maps():
    calls = {"scores": 0, "ids": 0}

    def scores(batch):
        calls["scores"] += 1
        return softmax_rule(batch)

    def ids(batch):
        calls["ids"] += 1
        return softmax_rule(batch).argmax(1).astype(np.uint8)

    rng = np.random.default_rng(3)
    lone = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((32, 32), (20, 27))]
    blended = segment_images(lone, scores, tile=32, overlap=8, micro_batch=2)
    assert calls == {"scores": 1, "ids": 0}
    fast = segment_images(lone, scores, tile=32, overlap=8, micro_batch=2, lone_ids=ids)
    assert calls == {"scores": 1, "ids": 1}  # both single-tile images went to the ids predictor
    for a, b in zip(blended, fast):
        np.testing.assert_array_equal(a, b)
    # beside an image of several tiles, the lone tile still goes to the ids predictor, in a
    # micro-batch of its own; the other image's tiles are blended from scores as before
    big = rng.integers(0, 256, size=(60, 45, 3), dtype=np.uint8)
    mixed = [lone[0], big]
    want = segment_images(mixed, scores, tile=32, overlap=8, micro_batch=8)
    calls.update(scores=0, ids=0)
    got = segment_images(mixed, scores, tile=32, overlap=8, micro_batch=8, lone_ids=ids)
    assert calls == {"scores": 1, "ids": 1}
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_lone_tile_ids_are_the_first_maximum_of_the_logits_and_the_argmax_of_the_scores():
    from handler.inference import tile_predictor

    class Tied(torch.nn.Module):
        """Logits (B, 4, H, W): classes 1 and 2 always equal, class 3 from the red channel."""

        def forward(self, x):
            r = x[:, :1]
            return {"out": torch.cat([0.5 - r, r.round(), r.round(), r - 0.25], 1)}

    model = Tied().eval()
    cpu = torch.device("cpu")
    batch = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    scores = tile_predictor(model, cpu, scores=True)(batch)
    ids = tile_predictor(model, cpu, channels_last=True)(batch)
    assert ids.dtype == np.uint8 and ids.shape == (2, 16, 16)
    assert set(np.unique(ids)) >= {0, 1}  # both sides of the rule occur; class 2 never wins a tie
    r = batch[..., 0].astype(np.float32) / np.float32(255)
    logits = np.stack([np.float32(0.5) - r, r.round(), r.round(), r - np.float32(0.25)], 1)
    np.testing.assert_array_equal(ids, logits.argmax(1))  # numpy: the first maximum
    for k in range(2):  # these logits are far apart or equal: the softmax keeps their order
        np.testing.assert_array_equal(ids[k], class_ids(scores[k]))


def test_lone_tile_ids_come_from_the_logits_where_the_probabilities_round_to_a_tie():
    from handler.inference import tile_predictor
    from tests.standins import NearTie

    cpu = torch.device("cpu")
    batch = np.random.default_rng(1).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    scores = tile_predictor(NearTie(), cpu, scores=True)(batch)
    assert np.all(scores[:, 0] == scores[:, 1])  # the two classes' probabilities are one value
    assert np.all(class_ids(scores[0]) == 0)  # blended: the first of the tied probabilities
    ids = tile_predictor(NearTie(), cpu, channels_last=True)(batch)
    assert np.all(ids == 1)  # alone: the first maximum of the logits


@pytest.mark.parametrize("classes", [1, 2, 5, 17, 256])
def test_first_max_class_is_numpys_argmax_ties_included(classes):
    from handler.inference import first_max_class

    rng = np.random.default_rng(classes)
    scores = rng.integers(0, 4, size=(3, classes, 37, 53)).astype(np.float32)  # many exact ties
    scores[:, :, 0, 0] = 1.0  # every class tied: the first one wins
    ids = first_max_class(torch.from_numpy(scores)).numpy()
    assert ids.dtype == np.uint8 and ids.shape == (3, 37, 53)
    np.testing.assert_array_equal(ids, scores.argmax(1))
