"""Build the TorchServe model archive (``geoseg.mar``) from an exported model.

The archive carries the TorchScript file, the handler entry point, the ``handler`` package
(everything the handler imports) and ``model-config.yaml``.

    python -m handler.package --model model/geoseg.pt --out model_store
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANDLER_DIR = ROOT / "handler"
MODEL_CONFIG = ROOT / "model" / "model-config.yaml"
HANDLER_MODULES = ("__init__", "errors", "decode", "tiling", "encode", "request", "inference",
                   "geoseg_handler")
"""What the handler imports: the only modules of ``handler/`` that go into the archive."""


def build_archive(model: str | Path, out_dir: str | Path, name: str = "geoseg",
                  config: str | Path = MODEL_CONFIG, version: str = "1.0") -> Path:
    """Write ``<out_dir>/<name>.mar``; returns its path. Raises FileNotFoundError / RuntimeError."""
    model, out_dir = Path(model), Path(out_dir)
    if not model.is_file():
        raise FileNotFoundError(f"{model} not found: run `make export` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    with tempfile.TemporaryDirectory() as staging:
        # --extra-files copies a folder's *contents*; staging keeps `handler/` a package.
        package = Path(staging) / "handler"
        package.mkdir()
        for module in HANDLER_MODULES:
            shutil.copy2(HANDLER_DIR / f"{module}.py", package)
        cmd = [str(archiver) if archiver.exists() else "torch-model-archiver",
               "--model-name", name, "--version", version, "--serialized-file", str(model),
               "--handler", str(HANDLER_DIR / "geoseg_handler.py"), "--extra-files", staging,
               "--config-file", str(config), "--export-path", str(out_dir), "--force"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return out_dir / f"{name}.mar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handler.package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="model/geoseg.pt", help="exported TorchScript file")
    parser.add_argument("--out", default="model_store", help="folder for the .mar")
    parser.add_argument("--name", default="geoseg", help="model name (URL /predictions/NAME)")
    parser.add_argument("--config", default=str(MODEL_CONFIG), help="model-config.yaml")
    args = parser.parse_args(argv)
    try:
        path = build_archive(args.model, args.out, args.name, args.config)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
