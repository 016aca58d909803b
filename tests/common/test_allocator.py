"""common.allocator: freed memory stays in the process, so repeated forward passes stop
faulting pages in. Each case runs in a fresh interpreter (the setting is per process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, resource
import torch
from common.allocator import keep_freed_memory
kept = keep_freed_memory()
x, w = torch.rand(1, 3, 512, 512), torch.rand(16, 3, 3, 3)
def layer():  # activations of a first conv layer on a 512 x 512 tile
    with torch.inference_mode():
        y = torch.nn.functional.conv2d(x, w, padding=1)  # 16 MiB
        return float(torch.nn.functional.max_pool2d(y.relu(), 2).sum())
layer(); layer()  # the first passes fault the heap in
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    layer()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(switch: str) -> dict:
    env = {**os.environ, "GEOSEG_KEEP_FREED_MEMORY": switch}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_kept_memory_stops_page_faults_of_repeated_allocations() -> None:
    default, kept = probe("0"), probe("1")
    assert default["kept"] is False and kept["kept"] is True
    pages = 20 * 16 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # of the largest activation alone
    # the C library's defaults map and unmap torch's blocks: their pages are faulted in again
    assert default["faults"] > pages // 2, default
    # kept: the blocks reuse the heap's pages (the heap may still grow once)
    assert kept["faults"] < pages // 10, kept
