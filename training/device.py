"""Choose the torch device from a command-line value."""
from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The asked-for device is not available here."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} asked for, but no CUDA device is available")
    return device
