"""Build GeoSeg's segmentation network: a torchvision DeepLabV3 with input normalisation inside.

The network takes float32 RGB in [0, 1], shape (N, 3, H, W), normalises it with the ImageNet
mean / std it carries as buffers, and returns a dict: ``out`` (N, C, H, W) logits and, when
built with ``aux_loss=True`` and in training, ``aux`` (N, C, H, W) logits of the auxiliary head.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models.segmentation import (
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet50,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURES = {
    # name: (torchvision builder, ImageNet backbone weights, state-dict prefix of a plain backbone)
    "deeplabv3_resnet50": (deeplabv3_resnet50, ResNet50_Weights.IMAGENET1K_V1, ""),
    "deeplabv3_mobilenet_v3_large": (
        deeplabv3_mobilenet_v3_large,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        "features.",
    ),
}
DEFAULT_ARCH = "deeplabv3_resnet50"
BN_MOMENTUM = 0.1
"""BatchNorm running-statistics momentum for every layer. torchvision's MobileNetV3 uses 0.01,
tuned for long ImageNet schedules: in a few hundred steps from scratch its running statistics
lag the weights so far that eval-mode predictions collapse (measured: 1.8% vs 56% mIoU)."""


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights could not be had (no network, bad file)."""


class NormalizedSegmenter(nn.Module):
    """A segmentation network that normalises its [0, 1] RGB input first.

    Input: (N, 3, H, W) float32 in [0, 1]. Output: dict with ``out`` (N, C, H, W) logits.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        mean = self.mean.to(x.dtype)
        std = self.std.to(x.dtype)
        return self.net((x - mean) / std)


def build_model(arch: str = DEFAULT_ARCH, num_classes: int = 5, pretrained: str = "none",
                aux_loss: bool = False) -> NormalizedSegmenter:
    """Build a DeepLabV3 for ``num_classes`` classes.

    ``pretrained``: ``none`` (random init), ``imagenet`` (torchvision's ImageNet backbone
    weights; needs them downloaded or in torch's cache), or a path to a local ``.pth`` state dict
    of the backbone (a plain torchvision ResNet-50 / MobileNetV3 state dict, or a whole DeepLabV3
    one). Raises PretrainedWeightsError with one clear line when weights cannot be had.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    builder, imagenet_weights, prefix = ARCHITECTURES[arch]
    if pretrained == "imagenet":
        try:
            net = builder(weights=None, weights_backbone=imagenet_weights,
                          num_classes=num_classes, aux_loss=aux_loss)
        except Exception as exc:  # urllib / hub errors differ by version; all mean "no weights"
            raise PretrainedWeightsError(
                f"could not load ImageNet weights {imagenet_weights} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); without network, "
                f"use --pretrained none or --pretrained PATH.pth"
            ) from exc
    else:
        net = builder(weights=None, weights_backbone=None, num_classes=num_classes,
                      aux_loss=aux_loss)
        if pretrained != "none":
            load_backbone_weights(net.backbone, Path(pretrained), prefix)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = BN_MOMENTUM
    return NormalizedSegmenter(net)


def load_backbone_weights(backbone: nn.Module, path: Path, plain_prefix: str) -> int:
    """Load a local state dict into ``backbone``; returns the number of tensors loaded.

    Accepts the plain classification network's keys (with ``plain_prefix`` in front), a
    DeepLabV3's (``backbone.``), or GeoSeg's own (``net.backbone.``), optionally nested under
    ``model`` / ``state_dict``.
    """
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    target = backbone.state_dict()
    best: dict[str, Tensor] = {}
    for prefix in (plain_prefix, "backbone.", "net.backbone.", ""):
        found = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix) and k[len(prefix):] in target
                 and target[k[len(prefix):]].shape == v.shape}
        if len(found) > len(best):
            best = found
    if not best:
        raise PretrainedWeightsError(f"{path}: no tensor matches this backbone's layers")
    backbone.load_state_dict(best, strict=False)
    return len(best)


def without_aux_head(model: NormalizedSegmenter) -> NormalizedSegmenter:
    """An eval-mode copy of ``model`` whose auxiliary head (training only) is gone."""
    model = copy.deepcopy(model).eval()
    if getattr(model.net, "aux_classifier", None) is not None:
        # torchvision lists aux_classifier in __constants__: it must leave _modules before
        # it can become the constant None that a scripted forward branches on.
        del model.net.aux_classifier
        setattr(model.net, "aux_classifier", None)  # noqa: B010 (typed as a Module)
    return model
