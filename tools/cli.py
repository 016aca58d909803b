"""``geoseg``: one command line for everything a user does.

Each subcommand is a module's ``main(argv) -> int``; ``geoseg SUBCOMMAND --help`` shows that
module's options with their defaults. The modules stay runnable as ``python -m ...`` too.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: the module whose ``function(argv) -> int`` runs it, and a one-line summary."""

    module: str
    summary: str
    function: str = "main"


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("training.train", "train a DeepLabV3 from point labels (or dense masks)"),
    "evaluate": Subcommand("training.run.evaluate", "mIoU of an exported model on a dataset split"),
    "predict": Subcommand("scene.cli", "map whole scenes of any size: COG, polygons, statistics"),
    "export": Subcommand("model.export", "checkpoint -> TorchScript file with its class table"),
    "archive": Subcommand("tools.archive", "exported model -> TorchServe archive (model_store/geoseg.mar)"),
    "serve": Subcommand("tools.serve", "build the archive and start TorchServe on 127.0.0.1:8080"),
    "stop": Subcommand("tools.serve", "stop the TorchServe that `geoseg serve` started", "stop_main"),
    "key": Subcommand("tools.key", "print a key of the TorchServe that `geoseg serve` started"),
    "demo": Subcommand("tools.demo", "synthetic data -> train -> export -> serve -> segment a scene"),
    "synthetic": Subcommand("training.data.synthetic", "write synthetic scenes or a synthetic dataset"),
    "label": Subcommand("labelling.server", "click points of classes on rasters in a local web page"),
    "peer-forest": Subcommand("benchmarks.peer_forest", "the forest peer: a random forest on filter features, trained on the same points"),
    "bench": Subcommand("benchmarks.run", "load test: TorchServe vs the bare model (--gpu: the GPU run)"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: geoseg SUBCOMMAND [options]   (geoseg SUBCOMMAND --help for its options)", "",
             "Land-cover segmentation of aerial imagery from a few labelled points.", "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name == "bench" and "--gpu" in rest:
        name, rest = "bench-gpu", [a for a in rest if a != "--gpu"]
        command = Subcommand("benchmarks.gpu", "")
    elif name in SUBCOMMANDS:
        command = SUBCOMMANDS[name]
    else:
        print(f"geoseg: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    run = getattr(importlib.import_module(command.module), command.function)
    sys.argv[0] = f"geoseg {name}"
    return int(run(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
