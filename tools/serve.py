"""``geoseg serve`` / ``geoseg stop``: TorchServe in the background on loopback.

``serve`` builds ``<model-store>/geoseg.mar`` from the exported model, starts TorchServe as a
daemon with the given config (default: the project's ``config.properties``, found beside the
installed package whatever the current folder: inference on 127.0.0.1:8080, management on
:8081, metrics on :8082, token authorisation on), writes its logs under ``logs/`` and waits
until the model answers. TorchServe writes its keys to ``key_file.json`` in the current folder
(``geoseg key`` prints the inference key). ``--shared-dir FOLDER`` lets clients on this machine
pass requests and answers as files in FOLDER instead of HTTP bodies (the handler's
``shared_dir``, docs/serving.md; created with mode 0770 when missing). ``stop`` stops it
(``torchserve --stop``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from common.cli import existing_file, fail, parser
from tools.archive import MODEL_CONFIG, ArchiveError, build_archive, config_with_handler
from tools.server import (
    BASE_CONFIG,
    KEY_FILE,
    LOG_CONFIG,
    ServerError,
    java_env,
    log_config_args,
    read_key,
    require_torchserve,
    serving_env,
    wait_ready,
)


def main(argv: Optional[list[str]] = None) -> int:
    p = parser("geoseg serve", __doc__)
    p.add_argument("--model", type=existing_file, default=Path("model/geoseg.pt"),
                   help="exported TorchScript file (geoseg export)")
    p.add_argument("--model-store", default="model_store", help="folder for geoseg.mar")
    p.add_argument("--config", type=existing_file, default=None,
                   help="TorchServe config (default: the project's config.properties; its "
                        "config.prod.properties turns token auth on)")
    p.add_argument("--logs", default="logs", help="folder for TorchServe's logs and metrics")
    p.add_argument("--shared-dir", type=Path, default=None, metavar="FOLDER",
                   help="let clients on this machine pass requests and answers as files in "
                        "FOLDER (e.g. /dev/shm/geoseg; created if missing) instead of HTTP bodies")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the model")
    args = p.parse_args(argv)
    config = args.config or BASE_CONFIG
    if not config.is_file():
        return fail(f"the project's TorchServe config is not at {config} (a copy of GeoSeg "
                    f"installed without it?); pass --config config.properties", 1)
    try:
        archive = archive_for(args.model, args.model_store, args.shared_dir)
        print(f"wrote {archive}")
        logs = Path(args.logs)
        logs.mkdir(parents=True, exist_ok=True)
        env = {**serving_env(), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)}
        with open(logs / "torchserve.out", "ab") as out:
            proc = subprocess.run([require_torchserve(), "--start", "--ncs", "--ts-config", str(config),
                                   *log_config_args(LOG_CONFIG),
                                   "--model-store", args.model_store, "--models", "geoseg=geoseg.mar"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            return fail(f"torchserve --start exited with {proc.returncode}; see {logs / 'torchserve.out'}", 1)
        url = "http://127.0.0.1:8080"
        wait_ready(url, "geoseg", args.timeout, key=lambda: read_key(".", "inference"))
    except (ArchiveError, ServerError) as exc:
        return fail(str(exc), 1)
    print(f"serving {url}/predictions/geoseg (logs in {logs}/; `geoseg stop` to stop)")
    if args.shared_dir is not None:
        print(f"shared folder {args.shared_dir.resolve()}: X-GeoSeg-Shared-Input / "
              "X-GeoSeg-Shared-Answer name files there")
    if read_key(".", "inference"):
        print(f"keys in {KEY_FILE}: send -H \"Authorization: Bearer $(geoseg key)\"")
    return 0


def archive_for(model: Path, store: str, shared_dir: Optional[Path]) -> Path:
    """``<store>/geoseg.mar`` of ``model`` with the project's model-config.yaml, its handler's
    ``shared_dir`` set to ``shared_dir`` (absolute; the folder made with mode 0770 when
    missing) when given. ArchiveError when the folder cannot be made."""
    if shared_dir is None:
        return build_archive(model, store)
    folder = shared_dir.resolve()
    try:
        folder.mkdir(parents=True)
        folder.chmod(0o770)  # the owner's group may write requests there, no one else
    except FileExistsError:
        pass  # an existing folder keeps its mode
    except OSError as exc:
        raise ArchiveError(f"--shared-dir {shared_dir}: {exc.strerror}") from None
    if not folder.is_dir():
        raise ArchiveError(f"--shared-dir {shared_dir}: not a folder")
    with tempfile.TemporaryDirectory() as staging:
        config = Path(staging) / "model-config.yaml"
        config.write_text(config_with_handler(MODEL_CONFIG, shared_dir=str(folder)))
        return build_archive(model, store, config=config)


def stop_main(argv: Optional[list[str]] = None) -> int:
    p = parser("geoseg stop", "Stop the TorchServe that `geoseg serve` started.")
    p.parse_args(argv)
    try:
        proc = subprocess.run([require_torchserve(), "--stop"], env={**os.environ, **java_env()},
                              capture_output=True, text=True)
    except ServerError as exc:
        return fail(str(exc), 1)
    print(proc.stdout.strip() or proc.stderr.strip())
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
