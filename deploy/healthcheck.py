"""Exit 0 when TorchServe's ``/ping`` answers Healthy, 1 otherwise (the image's HEALTHCHECK and the
Kubernetes exec probes of deploy/k8s). Standard library only: it runs in the serving image.

The address is the config file's ``inference_address`` (file: ``$GEOSEG_TS_CONFIG``, default
``/opt/geoseg/config/config.properties``), or ``$TS_INFERENCE_ADDRESS`` where the file sets
``enable_envvars_config=true`` (as TorchServe itself decides); 0.0.0.0 is reached on 127.0.0.1.
With token authorisation on, TorchServe 0.12 wants the inference key on ``/ping`` too: it is read
from ``key_file.json`` in the working directory, where TorchServe writes it.

    python healthcheck.py [--config FILE] [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_CONFIG = "/opt/geoseg/config/config.properties"


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a config.properties (``#`` / ``!`` comments skipped)."""
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if text and not text.startswith(("#", "!")) and "=" in text:
            key, _, value = text.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def ping_url(config: Path, env: dict[str, str]) -> str:
    """The ``/ping`` URL of the TorchServe that ``config`` (and ``env``) describe."""
    settings = read_properties(config)
    address = settings.get("inference_address", "http://127.0.0.1:8080")
    if settings.get("enable_envvars_config", "false").lower() == "true":
        address = env.get("TS_INFERENCE_ADDRESS", address)
    return address.rstrip("/").replace("://0.0.0.0", "://127.0.0.1") + "/ping"


def inference_key(workdir: Path) -> str | None:
    """The inference key from ``workdir/key_file.json``, None when there is none."""
    try:
        return json.loads((workdir / "key_file.json").read_text())["inference"]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def healthy(url: str, key: str | None, timeout: float) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read()).get("status") == "Healthy"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.environ.get("GEOSEG_TS_CONFIG", DEFAULT_CONFIG),
                        help="TorchServe config.properties (default: $GEOSEG_TS_CONFIG or %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        url = ping_url(Path(args.config), dict(os.environ))
    except OSError as exc:
        print(f"unhealthy: cannot read {args.config}: {exc.strerror}", file=sys.stderr)
        return 1
    if healthy(url, inference_key(Path.cwd()), args.timeout):
        return 0
    print(f"unhealthy: {url} did not answer Healthy", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
