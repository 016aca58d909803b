"""Choose the torch device from a command-line value (and, under torchrun, the process's GPU)."""
from __future__ import annotations

from typing import Optional

import torch


class DeviceError(RuntimeError):
    """The asked-for device is not available here."""


def resolve_device(name: str, local_rank: Optional[int] = None, processes: int = 1) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    In a data-parallel run, ``local_rank`` is this process's number among the ``processes``
    started on this machine (torchrun's LOCAL_RANK and LOCAL_WORLD_SIZE): on CUDA each process
    takes its own GPU, ``cuda:<local_rank>``, so the machine needs one GPU per process. Raises
    DeviceError (one line) when the device, or enough GPUs, is not there.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name} asked for, but no CUDA device is available")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"--device {name}: only {count} CUDA device(s) here")
    if local_rank is None:
        return device
    if device.index is not None:
        if processes > 1:
            raise DeviceError(f"--device {name} names one GPU, but {processes} training processes "
                              f"run on this machine: use --device cuda (process i takes cuda:i)")
        return device
    if processes > count:
        raise DeviceError(f"{processes} training processes with --device {name} need {processes} "
                          f"GPUs (one each); this machine has {count}: start at most {count}, "
                          f"or use --device cpu")
    return torch.device("cuda", local_rank)
