import os

import pytest
import torch
import torch.nn.functional as F

from training.labels.expansion import EXPANDED_OFFSET, PADDING, Targets, unpack_target
from training.losses.focal import partial_focal_ce
from training.losses.terms import Batch, ClickedPoints, ExpandedLabels, GatedCRF, TrainingLoss
from training.losses.weak import CRF_DOWNSCALE, GATED_CRF_RADIUS, downscale_for_crf, gated_crf_loss

U = 255


def reference_gated_crf(probs, image, valid, radius, sigma_xy, sigma_rgb):
    """The loss written out with unfold over every ordered pair (the paper's form)."""
    n, c, h, w = probs.shape
    d = 2 * radius + 1

    def unfold(x):
        return F.unfold(x, d, 1, radius).view(n, x.shape[1], d, d, h, w)

    ys, xs = torch.meshgrid(torch.arange(h, dtype=probs.dtype), torch.arange(w, dtype=probs.dtype),
                            indexing="ij")
    feats = torch.cat([torch.stack([xs, ys])[None].expand(n, 2, h, w) / sigma_xy,
                       image / sigma_rgb], 1)
    kernel = (-0.5 * (unfold(feats) - feats.view(n, -1, 1, 1, h, w)).pow(2).sum(1, keepdim=True)).exp()
    kernel[:, :, radius, radius] = 0
    m = valid.to(probs.dtype)
    kernel = kernel * unfold(torch.ones_like(m)) * unfold(m) * m.view(n, 1, 1, 1, h, w)
    agree = (unfold(probs) * probs.view(n, c, 1, 1, h, w)).sum(1, keepdim=True)
    return (kernel * (1 - agree)).sum() / m.sum()


def two_colour_image(h=16, w=16, edge=8):
    image = torch.zeros(1, 3, h, w)
    image[:, 0, :, :edge] = 1.0   # red left, blue right
    image[:, 2, :, edge:] = 1.0
    return image


def one_hot_probs(boundary, h=16, w=16, confidence=30.0):
    """Class 0 left of column ``boundary``, class 1 right of it, nearly one-hot."""
    logits = torch.zeros(1, 2, h, w)
    logits[:, 0, :, :boundary] = confidence
    logits[:, 1, :, boundary:] = confidence
    return logits.softmax(1)


def test_matches_the_unfold_form_of_the_paper_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 13, 17, generator=g, requires_grad=True)
    image = torch.rand(2, 3, 13, 17, generator=g)
    valid = torch.rand(2, 1, 13, 17, generator=g) > 0.2
    ours = gated_crf_loss(logits.softmax(1), image, valid, radius=3, sigma_xy=4.0, sigma_rgb=0.3)
    (g_ours,) = torch.autograd.grad(ours, logits)
    ref = reference_gated_crf(logits.softmax(1), image, valid, 3, 4.0, 0.3)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-7)


def test_zero_when_prediction_follows_colour_regions_large_when_it_crosses_them():
    image = two_colour_image()
    aligned = gated_crf_loss(one_hot_probs(8), image)
    crossing = gated_crf_loss(one_hot_probs(4), image)
    assert aligned.item() < 1e-9
    assert crossing.item() > 1.0
    # two wrong boundaries (columns 4 and 12, inside the colour regions) cost about twice one
    stripes = one_hot_probs(16)
    stripes[:, :, :, 4:8] = stripes[:, :, :, 4:8].flip(1)
    stripes[:, :, :, 12:] = stripes[:, :, :, 12:].flip(1)
    assert gated_crf_loss(stripes, image).item() == pytest.approx(2 * crossing.item(), rel=0.05)


def test_masked_pixels_contribute_nothing():
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 3, 12, 12, generator=g).softmax(1)
    image = torch.rand(2, 3, 12, 12, generator=g)
    valid = torch.ones(2, 1, 12, 12, dtype=torch.bool)
    valid[0, :, :, 7:] = False
    valid[1, :, 3:5, :] = False
    base = gated_crf_loss(probs, image, valid)
    # anything at masked pixels: same loss
    probs2 = torch.where(valid, probs, torch.rand(2, 3, 12, 12, generator=g).softmax(1))
    image2 = torch.where(valid, image, torch.rand(2, 3, 12, 12, generator=g))
    assert gated_crf_loss(probs2, image2, valid).item() == pytest.approx(base.item(), rel=1e-6)
    leaf = probs.clone().requires_grad_(True)
    gated_crf_loss(leaf, image, valid).backward()
    assert torch.all(leaf.grad[~valid.expand_as(leaf)] == 0)
    assert leaf.grad[valid.expand_as(leaf)].abs().sum() > 0
    none = gated_crf_loss(probs, image, torch.zeros_like(valid))
    assert none.item() == 0.0


def test_deterministic_and_fp16_safe():
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(2, 5, 20, 20, generator=g).softmax(1)
    image = torch.rand(2, 3, 20, 20, generator=g)
    a, b = gated_crf_loss(probs, image), gated_crf_loss(probs.clone(), image.clone())
    assert torch.equal(a, b)
    half = gated_crf_loss(probs.half(), image.half())
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(a.item(), rel=1e-2)


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(ValueError, match="disagree"):
        gated_crf_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="valid"):
        gated_crf_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4),
                       torch.ones(1, 2, 4, 4, dtype=torch.bool))


def test_downscale_pools_probabilities_colours_and_gate():
    logits = torch.zeros(1, 2, 8, 8)
    image = torch.rand(1, 3, 8, 8)
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    valid[0, 0, 0, 0] = False
    probs, small, gate = downscale_for_crf(logits, image, valid, 4)
    assert probs.shape == (1, 2, 2, 2) and small.shape == (1, 3, 2, 2)
    torch.testing.assert_close(small, F.avg_pool2d(image, 4))
    assert gate.dtype == torch.bool and gate.tolist() == [[[[False, True], [True, True]]]]
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 2, 2))


def labels_batch():
    """Packed targets (2, 16, 16): a few clicks, some expanded pixels, padding in image 1."""
    target = torch.full((2, 16, 16), U)
    target[0, 2, 3], target[0, 12, 12], target[1, 5, 5] = 1, 0, 2
    target[0, 0:4, 0:4] = EXPANDED_OFFSET + 1
    target[0, 2, 3] = 1                       # a click inside its own expanded segment
    target[1, 8:12, 0:6] = EXPANDED_OFFSET + 2
    target[1, :, 14:] = PADDING
    return target


def weak_loss(logits, target, image=None, *, gamma=2.0, alpha=None, expand_weight=0.5,
              crf_weight=0.0, crf_downscale=CRF_DOWNSCALE, crf_radius=GATED_CRF_RADIUS,
              targets=None):
    """The training loss of the clicked, expanded and Gated CRF terms on one head."""
    alpha = None if alpha is None else torch.tensor(alpha)
    terms = [ClickedPoints(gamma, alpha), ExpandedLabels(expand_weight, gamma, alpha),
             GatedCRF(crf_weight, 0, crf_downscale, crf_radius)]
    batch = Batch(image, target, targets if targets is not None else unpack_target(target))
    return TrainingLoss(terms)({"out": logits}, batch)


def test_with_zero_weights_it_is_exactly_pfce_and_plain_sparse_labels_work():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    image = torch.rand(2, 3, 16, 16, generator=g)
    target = labels_batch()
    clicked = torch.where(target < EXPANDED_OFFSET, target, torch.full_like(target, U))
    off = {"gamma": 2.0, "alpha": [1.0, 2.0, 3.0], "expand_weight": 0.0, "crf_weight": 0.0}
    expected = partial_focal_ce(logits, clicked, 2.0, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(weak_loss(logits, target, image, **off), expected)
    assert torch.equal(weak_loss(logits, clicked, **off), expected)  # plain sparse labels, no image


def test_expanded_pixels_are_a_separately_weighted_mean():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    target = labels_batch()
    clicked = torch.where(target < EXPANDED_OFFSET, target, torch.full_like(target, U))
    only_expanded = torch.where((target >= EXPANDED_OFFSET) & (target < PADDING),
                                target - EXPANDED_OFFSET, torch.full_like(target, U))
    got = weak_loss(logits, target, expand_weight=0.3)
    expected = partial_focal_ce(logits, clicked) + 0.3 * partial_focal_ce(logits, only_expanded)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # a pixel given both as clicked and expanded counts as clicked only
    overlapping = Targets(clicked, torch.where(clicked != U, clicked, only_expanded),
                          unpack_target(target).valid)
    both = weak_loss(logits, target, expand_weight=0.3, targets=overlapping)
    assert both.item() == pytest.approx(expected.item(), rel=1e-6)


def unlabelled_gradient(crf_weight, expand_weight=0.5):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 16, 16, generator=g, requires_grad=True)
    image = torch.rand(2, 3, 16, 16, generator=g)
    target = labels_batch()
    loss = weak_loss(logits, target, image, expand_weight=expand_weight, crf_weight=crf_weight,
                     crf_downscale=2, crf_radius=2)
    loss.backward()
    per_pixel = logits.grad.abs().sum(1)  # (N, H, W)
    return per_pixel, target


def test_unlabelled_pixels_get_gradient_only_from_the_regulariser():
    grad, target = unlabelled_gradient(crf_weight=0.0)
    unlabelled = target == U
    assert torch.all(grad[unlabelled] == 0)
    assert torch.all(grad[target == PADDING] == 0)
    assert torch.all(grad[(target >= EXPANDED_OFFSET) & (target < PADDING)] > 0)
    assert torch.all(grad[target < EXPANDED_OFFSET] > 0)
    grad, _ = unlabelled_gradient(crf_weight=0.1)
    assert (grad[unlabelled] > 0).float().mean() > 0.9
    assert torch.all(grad[target == PADDING] == 0)  # padding stays out of every term
    grad, _ = unlabelled_gradient(crf_weight=0.0, expand_weight=0.0)
    assert torch.all(grad[(target >= EXPANDED_OFFSET) & (target < PADDING)] == 0)


def test_combined_loss_is_deterministic_under_a_seed():
    def run():
        torch.manual_seed(7)
        logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        image = torch.rand(2, 3, 16, 16)
        loss = weak_loss(logits, labels_batch(), image, crf_weight=0.2, crf_downscale=2)
        loss.backward()
        return loss.detach(), logits.grad
    (a, ga), (b, gb) = run(), run()
    assert torch.equal(a, b) and torch.equal(ga, gb)


DEVICE = torch.device(os.environ.get("GEOSEG_TEST_DEVICE", "cpu"))


def test_device_matches_cpu_and_runs_under_autocast():
    """On ``GEOSEG_TEST_DEVICE`` (default cpu; ``cuda`` on a GPU machine, fp16 autocast there)
    the loss equals the CPU float32 one and its gradients are finite."""
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 5, 32, 32, generator=g)
    image = torch.rand(2, 3, 32, 32, generator=g)
    target = torch.full((2, 32, 32), U)
    target[:, 3, 3] = 1
    def crit(logits, target, image):
        return weak_loss(logits, target, image, crf_weight=0.1, crf_downscale=2)
    cpu = crit(logits, target, image)
    cuda = DEVICE.type == "cuda"
    device_logits = logits.to(DEVICE).requires_grad_(True)
    with torch.autocast(DEVICE.type, torch.float16, enabled=cuda):
        loss = crit(device_logits.half() if cuda else device_logits,
                               target.to(DEVICE), image.to(DEVICE))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(device_logits.grad).all()
    assert loss.item() == pytest.approx(cpu.item(), rel=2e-2)
