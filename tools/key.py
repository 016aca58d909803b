"""``geoseg key``: print a key of the TorchServe that ``geoseg serve`` started.

Token authorisation is on in the project's configs: TorchServe writes ``key_file.json`` with an
inference key, a management key and an API key (to rotate the other two) into the folder it was
started from, and every call carries one as ``Authorization: Bearer <key>``:

    curl -T tile.png -H "Authorization: Bearer $(geoseg key)" http://127.0.0.1:8080/predictions/geoseg
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from common.cli import fail, parser
from tools.server import KEY_FILE, read_key

KINDS = {"inference": "inference", "management": "management", "api": "API"}
"""The command's key names and the entries of TorchServe's key file."""


def main(argv: Optional[list[str]] = None) -> int:
    p = parser("geoseg key", __doc__)
    p.add_argument("kind", nargs="?", choices=sorted(KINDS), default="inference",
                   help="which key (default: inference)")
    p.add_argument("--dir", type=Path, default=Path("."),
                   help="the folder TorchServe was started from (default: the current one)")
    args = p.parse_args(argv)
    key = read_key(args.dir, KINDS[args.kind])
    if key is None:
        path = args.dir / KEY_FILE
        why = "no" if not path.is_file() else f"no {KINDS[args.kind]} key in the"
        return fail(f"{why} {path}: start the server from that folder (geoseg serve) first", 1)
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
