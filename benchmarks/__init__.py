"""GeoSeg's benchmarks: each module is a command that writes its result files into :data:`RESULTS`."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the committed result files live (``benchmarks/results``)."""


def cpu_machine(**versions: str) -> dict[str, Any]:
    """The machine a result was measured on: processor, core count, and any library
    ``versions`` the result depends on (``torch="2.x"``)."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            **versions}

