import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.focal import partial_focal_ce


def test_pfce_equals_hand_computation():
    # One image, 2 classes, 1x3 pixels; the middle pixel is unlabelled.
    logits = torch.tensor([[[[2.0, 0.0, -1.0]], [[0.0, 5.0, 1.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 255, 1]]])
    p0 = math.exp(2) / (math.exp(2) + 1)          # pixel 0, true class 0
    p2 = math.exp(1) / (math.exp(-1) + math.exp(1))  # pixel 2, true class 1
    focal = [-(1 - p) ** 2 * math.log(p) for p in (p0, p2)]
    expected = sum(focal) / (2 + 1e-6)
    assert partial_focal_ce(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_alpha_weights_each_pixel_by_its_true_class():
    logits = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([[[0, 1], [2, 255]]])
    alpha = torch.tensor([1.0, 2.0, 3.0])
    log_p = F.log_softmax(logits, 1)
    terms = [-(alpha[c]) * (1 - log_p[0, c, y, x].exp()) ** 2 * log_p[0, c, y, x]
             for (y, x), c in (((0, 0), 0), ((0, 1), 1), ((1, 0), 2))]
    expected = sum(terms) / (3 + 1e-6)
    got = partial_focal_ce(logits, target, gamma=2.0, alpha=alpha)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unlabelled_pixels_get_exactly_zero_gradient():
    logits = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0)) * 10
    logits.requires_grad_(True)
    target = torch.full((2, 8, 8), 255)
    target[0, 1, 2], target[1, 5, 5], target[1, 0, 7] = 3, 0, 4
    partial_focal_ce(logits, target).backward()
    grad = logits.grad
    labelled = (target != 255).unsqueeze(1).expand_as(grad)
    assert torch.all(grad[~labelled] == 0)
    assert torch.all(grad[labelled].abs().sum() > 0)


def test_batch_without_labels_gives_zero_and_no_nan():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss = partial_focal_ce(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert not torch.isnan(logits.grad).any()
    assert torch.all(logits.grad == 0)


def test_gamma_zero_is_masked_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (3, 6, 7), generator=g)
    target[torch.rand(3, 6, 7, generator=g) < 0.7] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert partial_focal_ce(logits, target, gamma=0.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_down_weights_easy_pixels():
    logits = torch.tensor([[[[8.0]], [[0.0]]]])
    target = torch.tensor([[[0]]])
    assert partial_focal_ce(logits, target, gamma=2.0) < partial_focal_ce(logits, target, gamma=0.0) * 1e-3


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match="disagree"):
        partial_focal_ce(torch.zeros(1, 5, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
