"""GeoSeg's benchmarks: each module is a command that writes its result files into :data:`RESULTS`."""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the committed result files live (``benchmarks/results``)."""


def cpu_machine(**versions: str) -> dict[str, Any]:
    """The machine a result was measured on: processor, core count, and any library
    ``versions`` the result depends on (``torch="2.x"``)."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            **versions}


def write_result(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``path`` as indented JSON, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
