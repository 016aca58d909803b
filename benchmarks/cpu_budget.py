"""Where the CPU goes during a load test: CPU seconds of each process of the serving stack and
of the load generator, per request.

On a machine where locust, TorchServe's frontend and its worker share the cores, served ÷ bare
is bounded by the CPU the others take from the model. These counters (psutil's per-process user
+ system times, and the rusage of waited-for children for locust) say how much each one takes.

    stack = StackProcesses.of(server.process.pid)
    before, locust_before = stack.cpu_seconds(), children_cpu_seconds()
    ... run locust (a child process that has exited when this returns) ...
    budget = cpu_budget(stack, before, locust_before, requests, seconds)
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import psutil


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's waited-for children (locust, once run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def role(process: psutil.Process) -> str:
    """``frontend`` (TorchServe's Java process), ``worker`` (a Python model worker) or
    ``launcher`` (the ``torchserve`` script)."""
    try:
        cmdline = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "model_service_worker" in cmdline:
        return "worker"
    if "org.pytorch.serve.ModelServer" in cmdline or os.path.basename(process.name()) == "java":
        return "frontend"
    return "launcher"


@dataclass
class StackProcesses:
    """The processes of one TorchServe: its launcher and every descendant."""

    processes: list[psutil.Process]

    @classmethod
    def of(cls, launcher_pid: int) -> StackProcesses:
        root = psutil.Process(launcher_pid)
        return cls([root, *root.children(recursive=True)])

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far, summed by :func:`role` (processes gone count 0)."""
        totals: dict[str, float] = {}
        for process in self.processes:
            try:
                times = process.cpu_times()
                name = role(process)
            except psutil.NoSuchProcess:
                continue
            totals[name] = totals.get(name, 0.0) + times.user + times.system
        return totals


def cpu_budget(stack: StackProcesses, before: dict[str, float], locust_before: float,
               requests: float, seconds: float) -> dict[str, float]:
    """CPU milliseconds per request of locust, the frontend, the worker(s) and the launcher
    between ``before`` and now, and ``available``: the machine's cores x ``seconds`` per
    request (what they could have had together)."""
    if requests <= 0:
        return {}
    after = stack.cpu_seconds()
    budget = {name: 1000 * (after.get(name, 0.0) - before.get(name, 0.0)) / requests
              for name in ("frontend", "worker", "launcher")}
    budget["locust"] = 1000 * (children_cpu_seconds() - locust_before) / requests
    budget["available"] = 1000 * len(os.sched_getaffinity(0)) * seconds / requests
    return {k: round(v, 2) for k, v in budget.items()}
