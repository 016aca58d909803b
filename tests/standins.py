"""Small stand-ins with the exported model's interface, for fast handler and server tests."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from model.artifact import quiet_jit, save_artifact
from model.class_table import ClassTable
from model.export import export_meta

PROTOTYPES = [[140, 138, 88], [170, 70, 55], [45, 85, 40], [35, 70, 95], [105, 105, 108]]


class ColourRule(nn.Module):
    """A fully convolutional stand-in: 3x3 box blur, then nearest of 5 prototype colours.

    logit_k = 2 x . c_k - |c_k|^2 (a 1x1 conv), so argmax picks the closest prototype; the
    prototypes are near the synthetic scenes' soil, roof, woodland, water and road colours.

    Receptive field ``blur`` x ``blur`` (3 by default, so tiles overlapping by >= 2 pixels must
    reproduce the untiled result away from the image border; a wider blur makes the answer
    depend on where the tile grid lies). Input (N, 3, H, W) in [0, 1] -> {"out": (N, 5, H, W)}.
    """

    def __init__(self, blur: int = 3) -> None:
        super().__init__()
        self.blur = nn.Conv2d(3, 3, blur, padding=blur // 2, groups=3, bias=False)
        self.blur.weight.data.fill_(1 / blur ** 2)
        self.head = nn.Conv2d(3, 5, 1)
        prototypes = torch.tensor(PROTOTYPES) / 255.0
        self.head.weight.data = (2 * prototypes).view(5, 3, 1, 1)
        self.head.bias.data = -(prototypes ** 2).sum(1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(self.blur(x))}


def write_standin(path: Path, blur: int = 3) -> Path:
    """Script :class:`ColourRule` (``blur``: its receptive field) with GeoSeg's metadata
    (LandCover.ai table) into ``path``."""
    with quiet_jit():
        scripted = torch.jit.script(ColourRule(blur).eval())
    save_artifact(scripted, export_meta(ClassTable.load(), "colour-rule-standin"), path)
    return path


class NearTie(nn.Module):
    """Logits (N, 5, H, W), the same at every pixel: class 1 beats class 0 by 1e-8, the others
    lie far below. In float32 their softmax gives classes 0 and 1 one probability (exp(-1e-8)
    rounds to 1), so the first maximum of the probabilities is class 0, that of the logits 1."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        zero = x[:, :1] * 0
        return {"out": torch.cat([zero, zero + 1e-8, zero - 1, zero - 1, zero - 1], 1)}


def write_near_tie(path: Path) -> Path:
    """Script :class:`NearTie` with GeoSeg's metadata (LandCover.ai table) into ``path``."""
    with quiet_jit():
        scripted = torch.jit.script(NearTie().eval())
    save_artifact(scripted, export_meta(ClassTable.load(), "near-tie-standin"), path)
    return path


class StandInMetrics:
    """TorchServe's ``context.metrics`` calls, recorded: (name, value, idx, {dimension: value})."""

    def __init__(self):
        self.counters, self.times = [], []

    def add_counter(self, name, value, idx=None, dimensions=None):
        self.counters.append((name, value, idx, {d.name: d.value for d in dimensions or []}))

    def add_metric(self, name, value, unit, idx=None, dimensions=None, metric_type=None):
        self.add_counter(name, value, idx, dimensions)

    def add_time(self, name, value, idx=None, unit="ms", dimensions=None, metric_type=None):
        self.times.append((name, value, idx, unit))

    def total(self, name, **dims):
        return sum(v for n, v, _, d in self.counters
                   if n == name and all(d.get(k) == x for k, x in dims.items()))


class StandInContext:
    """What GeoSegHandler and BaseHandler.handle use of ts.context.Context, recording
    statuses, content types and metrics."""

    def __init__(self, model_dir, headers=None, handler_config=None, metrics=None):
        self.model_name = "geoseg"
        self.metrics = metrics if metrics is not None else StandInMetrics()
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"serializedFile": "standin.pt"}}
        self.model_yaml_config = {"handler": handler_config or {"tile_size": 32, "tile_overlap": 8}}
        self.headers = headers or {}
        self.status, self.content_type = {}, {}

    def get_request_header(self, idx, key):
        return self.headers.get(idx, {}).get(key)

    def set_response_status(self, code, phrase, idx):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value


def varied_checkpoint(path: Path, table: ClassTable, tile: int = 512,
                      band_scaling: dict | None = None) -> Path:
    """A GeoSeg training checkpoint of an untrained MobileNetV3 DeepLabV3 whose answer varies
    with the image: BatchNorm statistics taken from synthetic scenes and the last layer centred
    and scaled on two (tile, tile) scenes, so several classes win with confident margins (a
    freshly initialised network answers one class everywhere). Deterministic; about 6 s."""
    import numpy as np

    from model.builder import build_model
    from model.checkpoint import save_checkpoint
    from training.data.synthetic import generate_scene

    def scenes(size: int, seeds: range) -> Tensor:
        rgb = np.stack([generate_scene((size, size), seed=s)[0] for s in seeds])
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255

    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenet_v3_large", table.num_classes)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
            module.reset_running_stats()
    with torch.no_grad():
        model.train()
        model(scenes(256, range(100, 104)))
        model.eval()
        logits = model(scenes(tile, range(200, 202)))["out"]
        mean, spread = logits.mean(dim=(0, 2, 3)), logits.std(dim=(0, 2, 3)) / 4
        last = model.net.classifier[-1]
        last.weight.div_(spread.view(-1, 1, 1, 1))
        last.bias.sub_(mean).div_(spread)
    save_checkpoint(path, {"arch": "deeplabv3_mobilenet_v3_large", "aux_loss": False,
                           "classes": table.to_dict(), "model": model.state_dict(), "epoch": 0,
                           "best_miou": 0.0, "crop_size": 256, "config": {},
                           "band_scaling": band_scaling})
    return path
