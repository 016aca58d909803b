"""The exported network compiled with ``torch.compile`` (TorchInductor by default).

An export holds TorchScript, which TorchInductor does not take. The architecture and the class
count travel in the export's record, so the same network is rebuilt as an eager module
(torchvision's DeepLabV3 inside :class:`~model.builder.NormalizedSegmenter`, no auxiliary head)
and the scripted module's weights and normalisation buffers are loaded into it by name; then
``torch.compile`` generates kernels for its fixed input shape. The compiled network answers what
the TorchScript one answers: :func:`argmax_agreement` measures how often their class ids agree.

Compiling takes minutes (about two on the 2-core CPU for a MobileNetV3 at 64 px), paid once
per process and input shape: worth it where the forward pass is the limit (a GPU behind enough
host cores), not for one short run.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from model.artifact import Artifact
from model.builder import NormalizedSegmenter, build_model, without_aux_head


def eager_network(artifact: Artifact) -> NormalizedSegmenter:
    """The export's network as an eval-mode eager module with the export's weights (on CPU).
    Raises ValueError when the export's architecture is not one GeoSeg builds."""
    model = without_aux_head(build_model(artifact.arch, artifact.classes.num_classes, "none"))
    state = {k: v.detach().cpu() for k, v in artifact.network.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def compiled_network(artifact: Artifact, backend: str = "inductor", mode: Optional[str] = None,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     channels_last: bool = False) -> Any:
    """``torch.compile`` of :func:`eager_network` on ``device`` in ``dtype``: called on
    (N, 3, H, W) RGB in [0, 1] it returns ``{"out": (N, C, H, W) logits}`` like the export.
    Compilation happens at the first call of each new input shape."""
    model = eager_network(artifact).to(device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model, backend=backend, mode=mode, dynamic=False)


def checked_compile(artifact: Artifact, reference: Any, backend: str, device: torch.device,
                    dtype: torch.dtype, channels_last: bool, batch: int, tile: int
                    ) -> tuple[Any, float]:
    """:func:`compiled_network` and its :func:`argmax_agreement` with ``reference`` (the
    TorchScript export on ``device`` in ``dtype``) on a seeded random (batch, 3, tile, tile)
    input; the first call, which compiles, happens here."""
    compiled = compiled_network(artifact, backend, device=device, dtype=dtype,
                                channels_last=channels_last)
    x = torch.rand(batch, 3, tile, tile, device=device, dtype=dtype,
                   generator=torch.Generator(device=device).manual_seed(0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return compiled, argmax_agreement(reference, compiled, x)


@torch.inference_mode()
def argmax_agreement(reference: Any, candidate: Any, x: torch.Tensor) -> float:
    """Share of pixels whose class id (argmax of ``out``) is the same from both networks on
    the (N, 3, H, W) input ``x``."""
    return float((reference(x)["out"].argmax(1) == candidate(x)["out"].argmax(1)).float().mean())
