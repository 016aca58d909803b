"""Keep the C heap's freed memory in the process, so that repeated forward passes stop paying
page faults.

With glibc's default settings, an allocation above a dynamic threshold (128 KiB at start) gets
its own ``mmap`` and is unmapped on ``free``, and the top of the heap is trimmed back to the
system. A forward pass on a 512 x 512 tile allocates and frees activations of 1-16 MiB, so
every pass maps fresh pages and the kernel zeroes each one on first touch. Measured on the
2-core CPU (DeepLabV3-MobileNetV3, one tile per pass, a fresh process, 120 passes): about 8,200
minor page faults and 15-20 ms of system time per pass, for ever (the dynamic threshold never
settled). With both thresholds set: no faults and no system time after the first passes.
Setting only the trim threshold is worse than nothing (it freezes the mmap threshold at
128 KiB: 88,000 faults per pass), setting only the mmap threshold still faults 25,000 times per
pass, so the two go together. (docs/predict.md, "Page faults")

The cost is memory held: the heap keeps its peak size instead of shrinking between passes.
PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc; this needs
no extra library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameters, from glibc's ``malloc.h``."""

MMAP_THRESHOLD_BYTES = 32 * 2**20
"""Allocations below this come from the heap (glibc's largest allowed value on 64-bit)."""

TRIM_THRESHOLD_BYTES = 2**30
"""Free memory at the top of the heap kept before any is returned to the system."""

SWITCH = "GEOSEG_KEEP_FREED_MEMORY"
"""Environment variable: ``0`` leaves the C library's defaults (less memory held, slower)."""


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once; later calls do nothing).

    True when both were set; False when :data:`SWITCH` is ``0`` or on a C library without
    ``mallopt`` (macOS, musl), where the process keeps the library's defaults."""
    if os.environ.get(SWITCH, "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
