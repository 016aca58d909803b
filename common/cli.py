"""Command-line manners shared by every GeoSeg command.

- ``--help`` shows each option's default (:class:`HelpFormatter`);
- a bad path or value ends the command with one line ``error: ...`` and exit code 2
  (:func:`fail`, and the argparse types :func:`existing_file`, :func:`existing_dir`);
- nothing a user relies on is overwritten without ``--overwrite`` (:func:`refuse_overwrite`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Module docstring kept as written, and ``(default: ...)`` after every option."""


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser named ``prog`` with ``doc`` as its description and defaults in help."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``error: message`` on one line to stderr; return ``code`` for ``main`` to return."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def existing_file(text: str) -> Path:
    """argparse type: a path that must be an existing file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a path that must be an existing folder."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def refuse_overwrite(path: str | Path, overwrite: bool) -> str | None:
    """Why writing ``path`` must not happen (it exists and ``overwrite`` is off), or None."""
    if Path(path).exists() and not overwrite:
        return f"{path} exists; pass --overwrite to replace it"
    return None
