"""DeepLabV3's image-pooling branch over a fixed window instead of the whole input.

torchvision's ``ASPPPooling`` averages the whole feature map, so a pixel's answer depends on
which tile it was cut into: neighbouring tiles of one scene see different averages and disagree
along their shared border. :class:`WindowImagePooling` averages a fixed square around each
feature pixel instead (``window`` input pixels a side, clipped at the input's edges), the same
wherever the tile grid lies. With the window at least twice the training crop, a training crop
sees its global average, as before.

The branch is linear up to its BatchNorm: ``conv1x1(mean(x)) == mean(conv1x1(x))``, so the 1x1
convolution runs first (256 channels instead of 960 / 2048) and the mean is a separable box
filter. The state dict is unchanged (same submodules, same keys): a network trained with
either branch loads into the other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPPooling


class WindowImagePooling(nn.Sequential):
    """Input (N, C, h, w) features at ``stride`` input pixels per feature pixel; output
    (N, 256, h, w): ReLU(BN(conv1x1(box mean of ``kernel`` feature pixels a side)))."""

    def __init__(self, branch: ASPPPooling, kernel: int) -> None:
        super().__init__(*list(branch.children()))
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the pooling kernel must be odd and positive (got {kernel})")
        self.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        y = self[1](x)
        half = self.kernel // 2
        y = F.avg_pool2d(y, (self.kernel, 1), stride=1, padding=(half, 0),
                         count_include_pad=False)
        y = F.avg_pool2d(y, (1, self.kernel), stride=1, padding=(0, half),
                         count_include_pad=False)
        return self[3](self[2](y))


def feature_stride(net: nn.Module) -> int:
    """Input pixels per feature pixel of a torchvision DeepLabV3's backbone output: 8 for
    ResNet-50 (dilated), 16 for MobileNetV3-Large (measured on a 256 px input)."""
    net = getattr(net, "net", net)
    with torch.no_grad():
        was_training = net.training
        net.eval()
        backbone: nn.Module = net.backbone  # type: ignore[assignment]
        features = backbone(torch.zeros(1, 3, 256, 256))["out"]
        net.train(was_training)
    return 256 // features.shape[-1]


def window_kernel(window: int, stride: int) -> int:
    """The odd kernel, in feature pixels, closest to ``window`` input pixels at ``stride``."""
    return max(1, (window // stride) // 2 * 2 + 1)


def use_window_pooling(net: nn.Module, window: int) -> int:
    """Replace the image-pooling branch of every ASPP in ``net`` (a GeoSeg
    ``NormalizedSegmenter`` or a torchvision DeepLabV3) by :class:`WindowImagePooling` over
    ``window`` input pixels; returns its kernel in feature pixels. In place."""
    kernel = window_kernel(window, feature_stride(net))
    replaced = 0
    for module in net.modules():
        if isinstance(module, ASPP):
            for i, branch in enumerate(module.convs):
                if isinstance(branch, ASPPPooling):
                    module.convs[i] = WindowImagePooling(branch, kernel)
                    replaced += 1
    if not replaced:
        raise ValueError("this network has no ASPP image-pooling branch to replace")
    return kernel
