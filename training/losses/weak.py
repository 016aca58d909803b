"""The Gated CRF loss on the unlabelled pixels.

Gated CRF loss (Obukhov et al. 2019, "Gated CRF Loss for Weakly Supervised Semantic Image
Segmentation", arXiv:1906.04651), Potts compatibility, one RGBXY Gaussian kernel::

    K_ij = exp(-|xy_i - xy_j|² / (2 sigma_xy²) - |rgb_i - rgb_j|² / (2 sigma_rgb²))
    loss = sum_i sum_{j in window(i), j != i} K_ij * v_i * v_j * (1 - <p_i, p_j>) / sum_i v_i

``window(i)``: the (2 radius + 1)² square around ``i`` (neighbours outside the image are left
out); ``p``: softmax probabilities; ``v``: the valid mask (the "gate": invalid pixels are neither
source nor destination). Neighbouring pixels of similar colour are pushed towards the same class,
pixels across a colour edge are left free. The sum runs over shifted copies of the tensors (one
per offset of the half window, each pair counted once and doubled), accumulated into
one "message" tensor ``m_i = sum_j K_ij p_j`` without gradient; the loss is
``(sum K - sum_i <p_i, m_i>) / sum v`` and its gradient ``-2 m_i / sum v``, exact because ``K`` is
symmetric. Memory stays O(N C h w) (unfold needs (2r+1)² times that), autograd keeps one node
instead of one per offset, and no compiled extension is needed.

Defaults are the authors' (radius 5, sigma_xy 6 pixels of the prediction grid, sigma_rgb 0.1
for RGB in [0, 1]) and, like theirs, the loss runs at the network's output resolution:
:class:`WeakSupervisionLoss` pools DeepLabV3's upsampled logits back by its output stride 8
(``crf_downscale``), so a 256x256 crop gives a 32x32 grid and the window spans 88 input pixels.
The kernel is computed without gradient (the image is an input, not a parameter), in float32
even under autocast.

In training it is the term :class:`training.losses.terms.GatedCRF` of the run's loss list.

Scale: for an untrained (uniform, 5-class) prediction on a Dubai photo the Gated CRF term is
about 30 (it sums the kernel over ~120 neighbours per pixel: about 37 per pixel there), while
pfCE (gamma 2) is about 1; one class everywhere scores 0, so too large a ``crf_weight``
pushes towards that. ``crf_weight`` 0.01-0.03 makes the term 0.3-1 times pfCE at the start;
it is off (0) by default and untuned: sweep it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

GATED_CRF_RADIUS = 5
GATED_CRF_SIGMA_XY = 6.0
GATED_CRF_SIGMA_RGB = 0.1
CRF_DOWNSCALE = 8
EXPAND_WEIGHT = 0.5


def _offsets(radius: int) -> list[tuple[int, int]]:
    """Half of the (2r+1)² window without the centre: each unordered pair of pixels once."""
    return [(dy, dx) for dy in range(radius + 1) for dx in range(-radius, radius + 1)
            if dy > 0 or dx > 0]


def _pair_slices(dy: int, dx: int, h: int, w: int) -> tuple[tuple[slice, slice],
                                                            tuple[slice, slice]]:
    """Slices (rows, cols) of pixels ``i`` and of their neighbours ``j = i + (dy, dx)``."""
    rows_i, rows_j = slice(0, h - dy), slice(dy, h)
    if dx >= 0:
        return (rows_i, slice(0, w - dx)), (rows_j, slice(dx, w))
    return (rows_i, slice(-dx, w)), (rows_j, slice(0, w + dx))


def gated_crf_loss(probs: Tensor, image: Tensor, valid: Optional[Tensor] = None,
                   radius: int = GATED_CRF_RADIUS, sigma_xy: float = GATED_CRF_SIGMA_XY,
                   sigma_rgb: float = GATED_CRF_SIGMA_RGB) -> Tensor:
    """Gated CRF loss (module doc) of softmax ``probs`` (N, C, h, w); a float32 scalar.

    ``image`` (N, 3, h, w) float in [0, 1] at the same resolution; ``valid`` (N, 1, h, w) bool,
    ``None`` = all valid. ``radius`` in pixels of the (h, w) grid; ``sigma_xy`` in the same
    pixels; ``sigma_rgb`` in [0, 1] colour units. 0 when no pixel is valid. Cost of forward +
    backward, batch 8 x 5 classes, radius 5: on this project's 2-core CPU about 16 ms at 32x32,
    31 ms at 64x64, 96 ms at 128x128 (best of 7; twice that on a loaded machine); on an H100
    about 10 ms at any of these sizes (bound by its 60 offsets' kernel launches).
    """
    if probs.dim() != 4 or image.dim() != 4 or image.shape[0] != probs.shape[0] \
            or image.shape[2:] != probs.shape[2:]:
        raise ValueError(f"probs (N, C, h, w) and image (N, 3, h, w) disagree: "
                         f"{tuple(probs.shape)} vs {tuple(image.shape)}")
    if valid is not None and (valid.dim() != 4 or valid.shape[1] != 1
                              or valid.shape[0] != probs.shape[0]
                              or valid.shape[2:] != probs.shape[2:]):
        raise ValueError(f"valid must be (N, 1, h, w) like probs {tuple(probs.shape)}, "
                         f"got {tuple(valid.shape)}")
    if radius < 1 or sigma_xy <= 0 or sigma_rgb <= 0:
        raise ValueError("radius >= 1, sigma_xy > 0 and sigma_rgb > 0 needed")
    n, _, h, w = probs.shape
    with torch.autocast(probs.device.type, enabled=False):
        p = probs.float()
        with torch.no_grad():
            mask = (torch.ones((n, 1, h, w), dtype=torch.float32, device=p.device)
                    if valid is None else valid.to(device=p.device, dtype=torch.float32))
            colour = image.detach().to(device=p.device, dtype=torch.float32) / sigma_rgb
            q = p.detach()
            message = torch.zeros_like(q)  # m_i = sum_j K_ij p_j over the whole window
            kernel_sum = q.new_zeros(())
            for dy, dx in _offsets(radius):
                if dy >= h or abs(dx) >= w:
                    continue
                (ri, ci), (rj, cj) = _pair_slices(dy, dx, h, w)
                diff = colour[:, :, ri, ci] - colour[:, :, rj, cj]
                kernel = torch.exp(diff.square().sum(1, keepdim=True).mul_(-0.5)
                                   .sub_((dy * dy + dx * dx) / (2.0 * sigma_xy ** 2)))
                kernel.mul_(mask[:, :, ri, ci]).mul_(mask[:, :, rj, cj])
                kernel_sum += 2.0 * kernel.sum()
                message[:, :, ri, ci].addcmul_(kernel, q[:, :, rj, cj])
                message[:, :, rj, cj].addcmul_(kernel, q[:, :, ri, ci])
            denom = mask.sum().clamp(min=1.0)
            agreement = (q * message).sum()
        # value: (sum K - sum_i <p_i, m_i>) / denom; gradient: d/dp_i = -2 m_i / denom, as the
        # pairwise sum gives (K is symmetric), without keeping one graph node per offset.
        surrogate = (p * message).sum()
        return (kernel_sum - agreement - 2.0 * (surrogate - surrogate.detach())) / denom


def downscale_for_crf(logits: Tensor, image: Tensor, valid: Optional[Tensor], factor: int
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax of ``logits`` (N, C, H, W), ``image`` (N, 3, H, W) and ``valid`` (N, 1, H, W)
    brought to (H // factor, W // factor): probabilities and colours averaged over each
    factor x factor block, a block valid only when all its pixels are. Rows / columns past the
    last full block are dropped. Probabilities in float32."""
    probs = F.softmax(logits.float(), dim=1)
    image = image.float()
    mask = (torch.ones_like(image[:, :1]) if valid is None else valid.float())
    if factor > 1:
        probs = F.avg_pool2d(probs, factor)
        image = F.avg_pool2d(image, factor)
        mask = -F.max_pool2d(-mask, factor)
    return probs, image, mask > 0.5
