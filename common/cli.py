"""Command-line manners shared by every GeoSeg command.

- ``--help`` shows each option's default (:class:`HelpFormatter`);
- a bad path or value ends the command with one line ``error: ...`` and exit code 2
  (:func:`fail`; the :func:`parser`'s own errors; the argparse types :func:`existing_file`,
  :func:`existing_dir`, :func:`existing_path`, :func:`at_least`, :func:`positive`;
  :func:`blocked_path` for an output under a file);
- nothing a user relies on is overwritten without ``--overwrite`` (:func:`refuse_overwrite`);
- libraries' warnings (rasterio's NotGeoreferencedWarning, torch's deprecations, GDAL's log
  lines) stay out of the user's terminal once a command has parsed its arguments
  (:func:`hide_library_warnings`): the commands say what matters in their own words
  (``warning: ...`` / ``note: ...`` lines, :func:`warn`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Module docstring kept as written, and ``(default: ...)`` after every option that has help
    text, except required ones and those whose help already says ``(default: ...)`` in words
    (a default that depends on other options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


LIBRARIES = ("rasterio", "pyogrio", "fiona", "pyproj", "shapely", "affine", "PIL", "torch",
             "torchvision", "numpy", "skimage", "sklearn", "tqdm")
"""Packages whose warnings a command's user does not see."""


def hide_library_warnings() -> None:
    """Silence what libraries tell programmers: warnings raised in :data:`LIBRARIES`, every
    deprecation / future warning, and the GDAL messages rasterio and pyogrio log below ERROR.
    Called when a command parses its arguments; it says what matters itself."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in LIBRARIES:
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    for name in ("rasterio", "pyogrio", "fiona"):
        logging.getLogger(name).setLevel(logging.ERROR)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line ``error: ...`` on stderr, exit code 2, and
    which hides library warnings (:func:`hide_library_warnings`) when it parses."""

    def parse_known_args(self, args=None, namespace=None):
        hide_library_warnings()
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")
        self.exit(EXIT_USAGE)


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser named ``prog`` with ``doc`` as its description, defaults in help and
    one-line usage errors."""
    return ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter)


LIBRARY_LOGGERS = ("training", "scene", "benchmarks")
"""Packages whose modules report progress through ``logging.getLogger(__name__)``."""


class _CurrentStdout(logging.Handler):
    """Writes each message on its own line to whatever ``sys.stdout`` is when it is emitted (so
    that a redirection made after set-up is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: never raise from emit
            self.handleError(record)


def show_messages(level: int = logging.INFO) -> None:
    """What a command shows of the library's messages: ``level`` and above of the packages in
    :data:`LIBRARY_LOGGERS`, as plain lines on stdout (no prefix). Library code only logs; the
    command line decides (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
            logger.addHandler(_CurrentStdout())


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``error: message`` on one line to stderr; return ``code`` for ``main`` to return."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def warn(message: str) -> None:
    """Print ``warning: message`` on one line to stderr (something the user should know, but
    the command goes on)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _path_check(text: str, ok: Callable[[Path], bool], missing: str) -> Path:
    path = Path(text)
    if not ok(path):
        raise argparse.ArgumentTypeError(f"{text}: {missing}")
    return path


def existing_file(text: str) -> Path:
    """argparse type: a path that must be an existing file."""
    return _path_check(text, Path.is_file, "no such file")


def existing_dir(text: str) -> Path:
    """argparse type: a path that must be an existing folder."""
    return _path_check(text, Path.is_dir, "no such folder")


def existing_path(text: str) -> Path:
    """argparse type: a path that must exist (a file or a folder)."""
    return _path_check(text, Path.exists, "no such file or folder")


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` (folders created) and say so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")




def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """argparse type: a number of ``kind`` (int or float) that is ``minimum`` or more."""
    def convert(text: str) -> float:
        value = _number(text, kind)
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    convert.__name__ = f"{kind.__name__} >= {minimum}"
    return convert


def positive(kind: type = float) -> Callable[[str], float]:
    """argparse type: a number of ``kind`` (int or float) above 0."""
    def convert(text: str) -> float:
        value = _number(text, kind)
        if not value > 0:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    convert.__name__ = f"{kind.__name__} > 0"
    return convert


def blocked_path(path: str | Path) -> str | None:
    """Why ``path`` cannot be created (a folder above it is a file), or None."""
    blocking = next((d for d in Path(path).parents if d.exists() and not d.is_dir()), None)
    return None if blocking is None else f"cannot write {path}: {blocking} is a file, not a folder"


def refuse_overwrite(path: str | Path, overwrite: bool) -> str | None:
    """Why writing ``path`` must not happen (it exists and ``overwrite`` is off), or None."""
    if Path(path).exists() and not overwrite:
        return f"{path} exists; pass --overwrite to replace it"
    return None
