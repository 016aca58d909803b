"""Load and faults: clients mix good and bad requests against a real TorchServe, then its
worker is killed while they go on.

- Load: every good answer equals its single-request reference byte for byte, every bad one
  gets its documented 4xx, nothing gets a 5xx, and the worker does not leak: the median RSS
  of the last fifth of the run exceeds the median of the first fifth (the warm-up under load)
  by at most ``--soak-rss-bound-mib``. Medians, because RSS jumps with the batch in hand.
- Kill: the worker is SIGKILLed mid-run; TorchServe starts a new one. Recovery time = from
  the kill to the first correct answer to a fresh request. Every request started after the
  recovery is answered correctly.

``make test`` runs it for seconds with the stand-in model; ``make soak`` for minutes with the
exported model, writing the figures to ``--soak-result``.
"""
import json
import os
import platform
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.load import MixRequest, Outcome, latency_ms, request_mix, run_load, status_counts, take_references
from tests.serving import ping, standin_store
from tools.archive import build_archive
from tools.server import TorchServe, rss_bytes

MAX_REQUEST_BYTES = 8 * 1024 * 1024
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def soak_server(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("soak")
    model = request.config.getoption("--soak-model")
    if model:
        store = build_archive(Path(model), work / "store").parent  # the archive's own config
    else:
        store = standin_store(work, delay_ms=50)
    ts = TorchServe(store, workdir=work / "ts",
                    extra_config={"max_request_size": MAX_REQUEST_BYTES})
    yield ts.start(timeout=300)
    ts.stop()


def kill_worker_and_time_recovery(server: TorchServe, probe: MixRequest, record: dict) -> None:
    """SIGKILL the worker, then send ``probe`` (10 s timeout) until it is answered correctly.
    Fills ``record``: old_pid, killed_at / recovered_at (time.monotonic()), probes."""
    record["old_pid"] = server.worker_pid()
    os.kill(record["old_pid"], signal.SIGKILL)
    record["killed_at"] = time.monotonic()
    record["probes"] = 0
    while time.monotonic() - record["killed_at"] < 120:
        record["probes"] += 1
        try:
            if probe.correct(probe.send(server, 10)):
                record["recovered_at"] = time.monotonic()
                return
        except OSError:
            pass
        time.sleep(0.1)


def rss_window_medians(samples: list[tuple[float, int]], seconds: float) -> tuple[int, int]:
    """Median RSS (bytes) of the samples in the first and in the last fifth of the run."""
    first = [r for t, r in samples if t <= seconds / 5]
    last = [r for t, r in samples if t >= seconds * 4 / 5]
    assert first and last, f"too few RSS samples: {samples}"
    return int(np.median(first)), int(np.median(last))


def summary(outcomes: list[Outcome], mix: list[MixRequest]) -> dict:
    good = {m.name for m in mix if m.good}
    return {"requests": len(outcomes),
            "good": sum(o.name in good for o in outcomes),
            "bad": sum(o.name not in good for o in outcomes),
            "failures": sum(not o.correct for o in outcomes),
            "server_errors_5xx": sum(isinstance(o.status, int) and o.status >= 500
                                     for o in outcomes),
            "statuses": status_counts(outcomes),
            "good_latency_ms": latency_ms([o for o in outcomes if o.name in good])}


def test_mixed_load_then_worker_kill(soak_server, request):
    option = request.config.getoption
    seconds, clients = option("--soak-seconds"), option("--soak-clients")
    bound = option("--soak-rss-bound-mib") * MIB
    server = soak_server
    rss_at_start = rss_bytes(server.worker_pid())
    mix = request_mix(MAX_REQUEST_BYTES)
    take_references(server, mix)
    rss_before = rss_bytes(server.worker_pid())

    load = run_load(server, mix, clients, seconds)
    rss_after = rss_bytes(server.worker_pid())
    rss_warm, rss_end = rss_window_medians(load.rss, seconds)
    load_figures = summary(load.outcomes, mix)

    record: dict = {}
    killer = threading.Thread(target=kill_worker_and_time_recovery,
                              args=(server, mix[0], record))

    def kill_once(elapsed: float) -> None:
        if elapsed >= 2 and killer.ident is None:
            killer.start()

    kill_seconds = max(15.0, seconds / 10)
    faults = run_load(server, mix, clients, kill_seconds, timeout=30, seed=1, during=kill_once)
    killer.join()
    assert "recovered_at" in record, f"no correct answer within 120 s of the kill: {record}"
    recovery_s = record["recovered_at"] - record["killed_at"]
    killed, recovered = (record[k] - faults.t0 for k in ("killed_at", "recovered_at"))
    after_recovery = [o for o in faults.outcomes if o.start > recovered]
    before_kill = [o for o in faults.outcomes if o.start + o.seconds < killed]
    affected = [o for o in faults.outcomes if o not in after_recovery and o not in before_kill]

    figures = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch": torch.__version__},
        "model": option("--soak-model") or "stand-in (tests/standins.py)",
        "clients": clients, "load_seconds": seconds, "kill_phase_seconds": kill_seconds,
        "load": load_figures,
        "rss_mib": {"at_start": round(rss_at_start / MIB, 1),
                    "after_references": round(rss_before / MIB, 1),
                    "median_first_fifth": round(rss_warm / MIB, 1),
                    "median_last_fifth": round(rss_end / MIB, 1),
                    "growth": round((rss_end - rss_warm) / MIB, 1), "bound": bound / MIB,
                    "at_end": round(rss_after / MIB, 1),
                    "max": round(max(r for _, r in load.rss) / MIB, 1),
                    "samples_s_mib": [(round(t), round(r / MIB)) for t, r in
                                      load.rss[::max(1, len(load.rss) // 60)]]},
        "kill": {"recovery_s": round(recovery_s, 2), "probes": record["probes"],
                 "old_pid": record["old_pid"], "new_pid": server.worker_pid(),
                 "before_kill": summary(before_kill, mix),
                 "in_flight_or_during_recovery": summary(affected, mix),
                 "after_recovery": summary(after_recovery, mix)},
    }
    result = option("--soak-result")
    if result:
        Path(result).parent.mkdir(parents=True, exist_ok=True)
        Path(result).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))

    assert load_figures["good"] > 0 and load_figures["bad"] > 0
    assert load_figures["server_errors_5xx"] == 0, load_figures
    assert load_figures["failures"] == 0, load_figures
    assert server.worker_pid() != record["old_pid"] and ping(server) == "Healthy"
    assert rss_end - rss_warm <= bound, figures["rss_mib"]
    assert recovery_s < 60
    assert after_recovery and all(o.correct for o in after_recovery), \
        figures["kill"]["after_recovery"]
    assert all(o.correct for o in before_kill), figures["kill"]["before_kill"]
