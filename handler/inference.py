"""Run the exported network on tiles: uint8 in, uint8 class ids out, argmax on the device.

:class:`HandlerConfig` is the one place that holds the handler's settings and their defaults;
``model-config.yaml`` may override any of them in its optional ``handler:`` section, and
:func:`model_config_yaml` writes such a file.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from handler.tiling import BLENDS, TilePredictor, first_max_class
from model.artifact import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE

CUDA_WAITS = ("block", "spin")
"""``HandlerConfig.cuda_wait``'s values."""


@dataclass(frozen=True)
class HandlerConfig:
    """The handler's settings: the ``handler:`` section of model-config.yaml, every key
    optional. These defaults are the only copy (model/model-config.yaml does not repeat them).

    ``tile_size`` / ``tile_overlap``: pixels (overlap at most half the tile); ``tile_blend``:
    how tiles are joined (``handler.tiling.BLENDS``: ``taper`` blends neighbours' class
    probabilities across the overlap, ``centre`` splits it with a hard line, cheaper but with
    seams where tiles disagree); ``tile_batch_size``: tiles per forward pass,
    pooled across the requests of a TorchServe batch, 0 for the device's default
    (:meth:`micro_batch`); every forward pass has exactly this many tiles (the last one is
    padded) so that an image's answer does not depend on what it was batched with;
    ``max_pixels``: width x height above which an image gets 413; ``decode_threads``: threads
    that decode a TorchServe batch's requests side by side (1: one after the other, in the
    worker's own thread), so that one worker can use several cores for decoding while it holds
    one copy of the model on the device; ``compile``: a ``torch.compile`` backend (``inductor``)
    to run the network compiled instead of as TorchScript (rebuilt from the export,
    :mod:`model.compiled`; empty: TorchScript). The worker compiles at start (minutes: raise
    TorchServe's ``startupTimeout``) and keeps TorchScript when the compiled network's class ids
    agree with TorchScript's on less than :data:`COMPILED_AGREEMENT` of a random micro-batch.
    ``shared_dir``: an absolute folder through which clients on the same machine may pass
    request and answer files instead of HTTP bodies (:mod:`handler.shared`; empty: off).
    ``cuda_wait``: how a worker waits for the device's answer (CUDA only): ``spin`` in CUDA's
    default wait, which with one context per process spins a core for as long as the device
    works, or ``block`` asleep on a blocking CUDA event (see :func:`tile_predictor`; not yet
    measured against each other, so the default stays CUDA's).
    """

    tile_size: int = DEFAULT_TILE_SIZE
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    tile_blend: str = "taper"
    tile_batch_size: int = 0       # 0: 1 on CPU, 16 on CUDA (see micro_batch)
    max_pixels: int = 100_000_000  # a whole LandCover.ai orthophoto is about 90 Mpx
    half_precision: bool = True    # CUDA only
    channels_last: bool = True     # any device: measured 1.37x faster on CPU (R50, batch 4)
    decode_threads: int = 1
    compile: str = ""               # "" (TorchScript) or a torch.compile backend, e.g. inductor
    shared_dir: str = ""            # "" (off) or a folder for shared request / answer files
    cuda_wait: str = "spin"         # "spin" (CUDA's default wait) or "block" (asleep)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> HandlerConfig:
        """The defaults overridden by ``values`` (a model-config.yaml ``handler:`` section,
        None when absent); ValueError for an unknown key or an impossible value."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"model-config.yaml handler section: unknown keys {unknown}")
        config = cls(**values)
        if config.tile_size < 16 or not 0 <= 2 * config.tile_overlap <= config.tile_size \
                or config.tile_blend not in BLENDS \
                or config.tile_batch_size < 0 or config.max_pixels < 1 \
                or config.decode_threads < 1 or config.cuda_wait not in CUDA_WAITS \
                or (config.shared_dir and not os.path.isabs(config.shared_dir)):
            raise ValueError(f"model-config.yaml handler section: bad values {config}")
        return config

    @property
    def blended(self) -> bool:
        """Whether tiles are blended (the predictor returns scores, scene windows read the tile
        before them) rather than split at the middle of their overlap."""
        return self.tile_blend == "taper"

    def micro_batch(self, device: torch.device | str) -> int:
        """Tiles per forward pass on ``device``: ``tile_batch_size``, or where that is 0, 1 on
        a CPU (a lone request pays for one tile, not a padded batch; batch 1 was the best CPU
        batch for R50) and 16 on CUDA (H100, R50 fp16: 749 tiles/s at 16 against 780 at 64
        and 250 at 1; docs/gpu.md)."""
        if self.tile_batch_size:
            return self.tile_batch_size
        return 16 if torch.device(device).type == "cuda" else 1

    def to_mapping(self) -> dict[str, Any]:
        """Every setting as a plain dict (the inverse of :meth:`from_mapping`)."""
        return asdict(self)


def model_config_yaml(torchserve: Mapping[str, Any], handler: HandlerConfig | None = None) -> str:
    """A model-config.yaml (archiver ``--config-file``) as YAML text, written with PyYAML.

    ``torchserve``: TorchServe's own keys, e.g. ``{"minWorkers": 1, "maxWorkers": 1,
    "batchSize": 4, "maxBatchDelay": 50, "responseTimeout": 600, "deviceType": "gpu"}``
    (``maxBatchDelay`` in ms, ``responseTimeout`` in s); ``handler``: written whole as the
    ``handler:`` section (omitted when None: the worker then uses HandlerConfig's defaults).
    ``HandlerConfig.from_mapping(yaml.safe_load(text)["handler"]) == handler``. Raises
    ValueError when ``torchserve`` holds a ``handler`` key of its own.

        model_config_yaml({"minWorkers": 1, "maxWorkers": 1, "batchSize": 8},
                          HandlerConfig(tile_batch_size=8, half_precision=False))
    """
    import yaml  # PyYAML: the TorchServe worker needs it anyway

    if "handler" in torchserve:
        raise ValueError("pass the handler section as a HandlerConfig, not in `torchserve`")
    document: dict[str, Any] = dict(torchserve)
    if handler is not None:
        document["handler"] = handler.to_mapping()
    return yaml.safe_dump(document, sort_keys=False)


def network_input(batch: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """(B, t, t, 3) uint8 RGB -> the network's (B, 3, t, t) ``dtype`` input in [0, 1], on the
    batch's device; channels-last memory when asked (the uint8 batch already has that layout,
    so it is one conversion either way)."""
    x = batch.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, t, t) logits -> (B, K, t, t) float32 softmax over the classes, as contiguous class
    planes (channels-last logits are copied first). On the CPU the softmax itself costs about
    half as much over contiguous planes as along a channels-last tensor's innermost axis (same
    values), which the copy about takes back; the argmax and the host's blending then read
    contiguous planes (docs/performance.md, "The predictor around the network")."""
    return logits.to(torch.float32, memory_format=torch.contiguous_format).softmax(1)


def tile_predictor(model: torch.nn.Module, device: torch.device, half: bool = False,
                   channels_last: bool = False, scores: bool = False,
                   blocking_wait: bool = False) -> TilePredictor:
    """(B, t, t, 3) uint8 -> (B, t, t) uint8 ids, the first maximum of the logits taken on the
    device (only uint8 crosses the host-device link), or with ``scores`` (B, K, t, t) float32
    class probabilities (softmax in float32 on the device), which ``handler.tiling`` blends
    across tile overlaps. The ids are the class map of a tile alone in its image too
    (``segment_images``' ``lone_ids``): the softmax keeps the order of the logits, so they are
    the class of highest probability, except where two classes' float32 probabilities round to
    the same value although their logits differ.

    ``half`` applies on CUDA only (``model`` must already be in half precision);
    ``channels_last`` on any device. On CUDA the batch goes through one pinned host buffer per
    shape, so its copy to the device is asynchronous; with ``blocking_wait`` the thread then
    sleeps on a blocking CUDA event until the device has finished, and only then copies the
    answer back. CUDA's default wait (a process with one context, fewer contexts than cores)
    spins a core for the whole of the device's work, possibly why on an H200 with 4-12 workers
    their CPU per ``.npy`` request grew from 5.1 to 18.8 ms while their own stages did not
    (docs/gpu.md; not measured yet). Call :func:`warm_up` before the first answer counts.
    """
    cuda = device.type == "cuda"
    dtype = torch.float16 if half and cuda else torch.float32
    pinned: dict[tuple[int, ...], torch.Tensor] = {}

    def to_device(batch: np.ndarray) -> torch.Tensor:
        if not cuda:
            return torch.from_numpy(np.ascontiguousarray(batch))
        staging = pinned.get(batch.shape)
        if staging is None:
            staging = pinned.setdefault(batch.shape, torch.empty(batch.shape, dtype=torch.uint8,
                                                                 pin_memory=True))
        # the previous batch's copy has finished: its answer was copied back before we return
        np.copyto(staging.numpy(), batch)
        return staging.to(device, non_blocking=True)

    def to_host(answer: torch.Tensor) -> np.ndarray:
        if cuda and blocking_wait:
            done = torch.cuda.Event(blocking=True)
            done.record()
            done.synchronize()  # asleep until the device is done, not spinning a core
        return answer.cpu().numpy()

    def predict(batch: np.ndarray) -> np.ndarray:
        x = network_input(to_device(batch), dtype, channels_last)
        with torch.inference_mode():
            logits = model(x)["out"]
            if scores:
                return to_host(class_probabilities(logits))
            # contiguous class planes first: on the CPU the argmax reads a plane at a time
            # (docs/performance.md, "The predictor around the network")
            return to_host(first_max_class(logits.contiguous()))

    return predict


COMPILED_AGREEMENT = 0.99
"""Least share of pixels on which the compiled network's class ids must equal TorchScript's
(random input in the served precision) for the worker to serve it."""


def serving_network(artifact: Any, scripted: torch.nn.Module, device: torch.device,
                    config: HandlerConfig) -> tuple[Any, str]:
    """The network the worker serves and a line saying which: ``scripted`` (the export,
    already on ``device`` in the served precision), or with ``config.compile`` the export
    rebuilt and compiled with that backend, if its argmax agrees with ``scripted``'s on a
    random (micro_batch, 3, tile, tile) input at least :data:`COMPILED_AGREEMENT` of the time."""
    if not config.compile:
        return scripted, "TorchScript"
    from model.compiled import checked_compile

    half = config.half_precision and device.type == "cuda"
    compiled, agreement = checked_compile(
        artifact, scripted, config.compile, device, torch.float16 if half else torch.float32,
        config.channels_last, config.micro_batch(device), config.tile_size)
    if agreement < COMPILED_AGREEMENT:
        return scripted, (f"TorchScript (the {config.compile} build agreed on only "
                          f"{100 * agreement:.2f}% of pixels)")
    return compiled, f"torch.compile {config.compile} ({100 * agreement:.2f}% of pixels as TorchScript)"


WARM_UP_PASSES = 3
"""TorchScript's profiling executor runs a module's first calls unoptimised and then switches to
a fused graph with other rounding; on an H100 (ResNet-50, fp16) the first call's argmax differed
from later ones. Warming up at the served shape keeps every answer on the final graph."""


def config_predictor(model: torch.nn.Module, device: torch.device, config: HandlerConfig
                     ) -> TilePredictor:
    """:func:`tile_predictor` as ``config`` asks for it: half precision (CUDA only; ``model``
    already converted), channels-last, the CUDA wait, and scores where tiles are blended."""
    return _configured(model, device, config, scores=config.blended)


def _configured(model: torch.nn.Module, device: torch.device, config: HandlerConfig,
                scores: bool) -> TilePredictor:
    """:func:`tile_predictor` with ``config``'s precision, layout and CUDA wait."""
    half = config.half_precision and device.type == "cuda"
    return tile_predictor(model, device, half, config.channels_last, scores=scores,
                          blocking_wait=config.cuda_wait == "block")


def lone_tile_predictor(model: torch.nn.Module, device: torch.device, config: HandlerConfig
                        ) -> TilePredictor | None:
    """Where ``config`` blends tiles, the ``lone_ids`` predictor of
    ``handler.tiling.segment_images`` for :func:`config_predictor`'s network: the first maximum
    of the logits on the device, without the softmax that blending needs (on the CPU the
    softmax of a 5-class 512 px tile cost about 1.8 CPU ms, as much as the stand-in's network:
    docs/performance.md, "A lone tile without the softmax"). None with the hard split, whose
    predictor already answers ids. It runs the same network at the same shape, so
    :func:`warm_up` of the first warms it too."""
    if not config.blended:
        return None
    return _configured(model, device, config, scores=False)


def warm_up(predict: TilePredictor, micro_batch: int, tile: int) -> None:
    """Run ``predict`` :data:`WARM_UP_PASSES` times on a blank (micro_batch, tile, tile, 3) batch."""
    blank = np.zeros((micro_batch, tile, tile, 3), dtype=np.uint8)
    for _ in range(WARM_UP_PASSES):
        predict(blank)
