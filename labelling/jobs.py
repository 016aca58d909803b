"""Long work started from the page (training the network, mapping a raster with it), run as
``geoseg`` subprocesses one after the other in a background thread, with the last line each
printed as progress. One job at a time; the page polls :meth:`Job.status`."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Step:
    """One command of a job: a name the page shows and the ``geoseg`` arguments."""

    name: str
    args: list[str]


@dataclass
class JobState:
    """What the page shows: ``state`` idle / running / done / failed, the step running, the
    latest output line, seconds since the start, and the error line of a failed step."""

    kind: str = ""
    state: str = "idle"
    step: str = ""
    line: str = ""
    seconds: float = 0.0
    error: str = ""
    log: Path | None = None
    started: float = field(default=0.0, repr=False)


def geoseg_command(args: Sequence[str]) -> list[str]:
    """``geoseg ARGS`` run with this Python (the page's own environment)."""
    return [sys.executable, "-m", "tools.cli", *args]


class Job:
    """Runs :class:`Step` lists in a thread; ``on_done`` is called after the last step succeeds."""

    def __init__(self) -> None:
        self._state = JobState()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def status(self) -> dict[str, object]:
        """The state as JSON-ready dict."""
        with self._lock:
            s = self._state
            seconds = time.monotonic() - s.started if s.state == "running" else s.seconds
            return {"kind": s.kind, "state": s.state, "step": s.step, "line": s.line,
                    "seconds": round(seconds, 1), "error": s.error,
                    "log": str(s.log) if s.log else None}

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state.state == "running"

    def start(self, kind: str, steps: list[Step], log: Path,
              on_done: Callable[[], None] = lambda: None) -> None:
        """Start ``steps``; RuntimeError if a job is running. Output goes to ``log`` too."""
        with self._lock:
            if self._state.state == "running":
                raise RuntimeError(f"{self._state.kind} is still running")
            self._state = JobState(kind=kind, state="running", log=log, started=time.monotonic())
        threading.Thread(target=self._run, args=(steps, log, on_done), daemon=True).start()

    def _update(self, **changes: object) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def _run(self, steps: list[Step], log: Path, on_done: Callable[[], None]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            for step in steps:
                self._update(step=step.name, line="")
                out.write(f"$ geoseg {' '.join(step.args)}\n")
                out.flush()
                last = self._run_step(step, out)
                if last is not None:
                    self._finish("failed", f"{step.name} failed: {last or 'no output'}")
                    return
        try:
            on_done()
        except Exception as exc:  # noqa: BLE001 (shown on the page, the job must end)
            self._finish("failed", f"{type(exc).__name__}: {exc}")
            return
        self._finish("done", "")

    def _run_step(self, step: Step, out: object) -> str | None:
        """Run one step; None when it succeeded, else its last output line."""
        process = subprocess.Popen(geoseg_command(step.args), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._process = process
        last = ""
        assert process.stdout is not None
        for chunk in process.stdout:
            out.write(chunk)  # type: ignore[attr-defined]
            for part in chunk.replace("\r", "\n").splitlines():
                if part.strip():
                    last = part.strip()
                    self._update(line=last[:200])
        return None if process.wait() == 0 else last

    def _finish(self, state: str, error: str) -> None:
        with self._lock:
            self._state.seconds = time.monotonic() - self._state.started
            self._state.state, self._state.error = state, error

    def stop(self) -> None:
        """End a running step (the page's server is stopping)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
