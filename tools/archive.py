"""Build the TorchServe model archive (``geoseg.mar``) from an exported model.

The archive carries the TorchScript file, the handler entry point, every project module the
handler imports (found by following its imports, see :func:`worker_modules`: the ``handler``
package and the shared artifact contract in ``model/``) and ``model-config.yaml``.

    python -m tools.archive --model model/geoseg.pt --out model_store
"""
from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common.cli import fail

ROOT = Path(__file__).resolve().parent.parent
HANDLER_ENTRY = ROOT / "handler" / "geoseg_handler.py"
MODEL_CONFIG = ROOT / "model" / "model-config.yaml"
FORBIDDEN_IN_WORKER = ("training", "tools", "benchmarks", "tests")
"""Packages the worker must never import: the archive builder refuses to pack them."""


class ArchiveError(RuntimeError):
    """The archive cannot be built (missing model, layering violation, archiver failure)."""


def _project_module(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module ``name`` under ``root`` (``a.b`` -> ``a/b.py`` or
    ``a/b/__init__.py``), None when it is not the project's."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (``from a.b import c`` gives
    ``a.b`` and ``a.b.c``: ``c`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def worker_modules(entry: Path = HANDLER_ENTRY, root: Path = ROOT) -> list[Path]:
    """Every project file the TorchServe worker imports, starting from the handler ``entry``:
    the closure of its project-local imports, plus each package's ``__init__.py``. Paths are
    relative to ``root`` (the project's root; another one for tests), where ``entry`` must
    lie. Raises ArchiveError if the closure reaches a package in :data:`FORBIDDEN_IN_WORKER`."""
    root = Path(root).resolve()
    seen: set[Path] = set()
    todo = [Path(entry).resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            found = _project_module(name, root)
            if found is None:
                continue
            top = name.split(".")[0]
            if top in FORBIDDEN_IN_WORKER:
                raise ArchiveError(f"{path.relative_to(root)} imports {name}: the worker may "
                                   f"not import {', '.join(FORBIDDEN_IN_WORKER)}")
            todo.append(found)
            for k in range(1, name.count(".") + 1):  # parent packages' __init__.py
                parent = _project_module(".".join(name.split(".")[:k]), root)
                if parent is not None:
                    todo.append(parent)
    return sorted(p.relative_to(root) for p in seen)


def config_with_handler(config: str | Path, **settings: object) -> str:
    """The model-config.yaml ``config`` with ``settings`` put into its ``handler:`` section
    (e.g. ``shared_dir="/dev/shm/geoseg"``), as YAML text; TorchServe's keys stay, and the
    section is written whole (every handler setting, its own or the default). ArchiveError for
    an unreadable file, one that is not a mapping, or a setting the handler refuses."""
    import yaml

    from handler.inference import HandlerConfig, model_config_yaml

    try:
        document = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(document, dict):
            raise ValueError("not a mapping of settings")
        handler = HandlerConfig.from_mapping({**(document.pop("handler", None) or {}), **settings})
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise ArchiveError(f"{config}: {exc}") from None
    return model_config_yaml(document, handler)


def build_archive(model: str | Path, out_dir: str | Path, name: str = "geoseg",
                  config: str | Path = MODEL_CONFIG, version: str = "1.0") -> Path:
    """Write ``<out_dir>/<name>.mar``; returns its path. Raises ArchiveError."""
    model, out_dir = Path(model), Path(out_dir)
    if not model.is_file():
        raise ArchiveError(f"{model} not found: run `geoseg export` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    with tempfile.TemporaryDirectory() as staging:
        # --extra-files copies a folder's *contents*; staging keeps the packages' layout.
        for module in worker_modules():
            (Path(staging) / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / module, Path(staging) / module)
        cmd = [str(archiver) if archiver.exists() else "torch-model-archiver",
               "--model-name", name, "--version", version, "--serialized-file", str(model),
               "--handler", str(HANDLER_ENTRY), "--extra-files", staging,
               "--config-file", str(config), "--export-path", str(out_dir), "--force"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ArchiveError(f"torch-model-archiver failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return out_dir / f"{name}.mar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.archive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="model/geoseg.pt", help="exported TorchScript file")
    parser.add_argument("--out", default="model_store", help="folder for the .mar")
    parser.add_argument("--name", default="geoseg", help="model name (URL /predictions/NAME)")
    parser.add_argument("--config", default=str(MODEL_CONFIG), help="model-config.yaml")
    args = parser.parse_args(argv)
    try:
        path = build_archive(args.model, args.out, args.name, args.config)
    except ArchiveError as exc:
        return fail(str(exc), 1)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
