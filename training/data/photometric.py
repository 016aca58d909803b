"""Photometric augmentation of a training batch: each image gets its own brightness, contrast,
saturation and per-band gain, so that the network does not learn one photo's colours.

Applied to the network's input only (``training.run.loop``): the Gated CRF's colour kernel and
the mean teacher keep the image as read, so the teacher labels the clean view the student sees
jittered.
"""
from __future__ import annotations

import torch
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights of R, G, B in the grey that saturation blends towards."""


def color_jitter(images: Tensor, strength: float) -> Tensor:
    """``images`` (N, 3, H, W) float in [0, 1] -> a jittered copy, same shape, in [0, 1].

    Per image, each factor drawn uniformly from [1 - strength, 1 + strength] (band gains from a
    quarter of that range): brightness scales all bands, contrast scales the distance to the
    image's mean grey, saturation the distance to each pixel's grey, then each band its gain.
    ``strength`` 0 returns ``images`` itself. Draws from torch's default generator (seeded per
    epoch by the training loop)."""
    if strength <= 0:
        return images
    n = images.shape[0]

    def factors(*shape: int, spread: float = strength) -> Tensor:
        draw = torch.rand(n, *shape, device=images.device, dtype=images.dtype)
        return 1 + spread * (2 * draw - 1)

    luma = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    out = images * factors(1, 1, 1)
    grey = (out * luma).sum(1, keepdim=True)
    out = grey.mean((2, 3), keepdim=True) + factors(1, 1, 1) * (out - grey.mean((2, 3), keepdim=True))
    grey = (out * luma).sum(1, keepdim=True)
    out = grey + factors(1, 1, 1) * (out - grey)
    out = out * factors(3, 1, 1, spread=strength / 4)
    return out.clamp(0.0, 1.0)
