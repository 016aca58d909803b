"""GeoSeg's benchmarks: each module is a command that writes its result files into :data:`RESULTS`."""
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the committed result files live (``benchmarks/results``)."""
