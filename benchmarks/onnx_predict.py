"""``geoseg predict`` with an ONNX export (onnxruntime) against the TorchScript export of the
same network, on the CPU, and how far their maps agree.

    python -m benchmarks.onnx_predict                        # MobileNetV3 and ResNet-50
    python -m benchmarks.onnx_predict --archs deeplabv3_mobilenet_v3_large --repeats 5

Per architecture: one randomly initialised network (speed does not depend on weights) exported
both ways, one generated scene (``--side`` pixels square), then ``--repeats`` pairs of runs in
alternating order (TorchScript first on even pairs): tiles/s while segmenting, from each run's
summary line, and the ONNX ÷ TorchScript ratio per pair (median and range). The maps of the last
pair are compared pixel by pixel. Results go to ``benchmarks/results/onnx-predict-cpu.json``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from benchmarks import RESULTS, cpu_machine
from benchmarks.predict import run_predict, summary, write_large_scene
from common.cli import at_least, parser, write_json
from model.builder import build_model
from model.class_table import ClassTable
from model.export import export_model
from model.onnx_export import TilingHint, export_onnx

ARCHS = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50")


def export_both(arch: str, folder: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A random-weight ``arch`` as TorchScript and as ONNX; the ONNX parity figures."""
    torch.manual_seed(0)
    table = ClassTable.load()
    model = build_model(arch, num_classes=table.num_classes).eval()
    scripted, onnx_path = folder / f"{arch}.pt", folder / f"{arch}.onnx"
    export_model(model, table, arch, scripted, {"weights": "random (benchmark only)"}, 64)
    parity = export_onnx(model, table, arch, onnx_path, TilingHint(512, 96))
    return scripted, onnx_path, {"agreement": parity.agreement,
                                 "max_probability_difference": parity.max_probability_difference}


def read_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def compare(arch: str, scene: Path, folder: Path, repeats: int) -> dict[str, Any]:
    scripted, onnx_path, parity = export_both(arch, folder)
    runs: dict[str, list[float]] = {"torchscript": [], "onnx": []}
    cpu: dict[str, list[float]] = {"torchscript": [], "onnx": []}
    ratios = []
    for pair in range(repeats):
        order = [("torchscript", scripted), ("onnx", onnx_path)]
        for name, model in order if pair % 2 == 0 else order[::-1]:
            result = run_predict([str(scene), str(folder / f"{name}.tif"), "--model", str(model),
                                  "--device", "cpu"])
            runs[name].append(result["tiles_per_s"])
            cpu[name].append(result["cpu_ms_per_tile"])
        ratios.append(runs["onnx"][-1] / runs["torchscript"][-1])
        print(f"{arch} pair {pair + 1}/{repeats}: torchscript {runs['torchscript'][-1]:.2f}, "
              f"onnx {runs['onnx'][-1]:.2f} tiles/s", flush=True)
    same = float((read_map(folder / "torchscript.tif") == read_map(folder / "onnx.tif")).mean())
    return {"arch": arch, "export_parity": parity, "map_agreement": same,
            "tiles_per_s": {k: summary(v) for k, v in runs.items()},
            "cpu_ms_per_tile": {k: summary(v) for k, v in cpu.items()},
            "onnx_over_torchscript": summary(ratios), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m benchmarks.onnx_predict", __doc__)
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--side", type=at_least(512), default=2048, help="scene side in pixels")
    p.add_argument("--repeats", type=at_least(1), default=3, help="pairs of runs per architecture")
    p.add_argument("--out", type=Path, default=RESULTS / "onnx-predict-cpu.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene = write_large_scene(folder / "scene.tif", args.side)
        rows = [compare(arch, scene, folder, args.repeats) for arch in args.archs]
    record = {"benchmark": "geoseg predict: ONNX (onnxruntime) vs TorchScript, CPU",
              "machine": cpu_machine(torch=torch.__version__,
                                    onnxruntime=__import__("onnxruntime").__version__),
              "scene_side": args.side, "repeats": args.repeats, "rows": rows}
    for row in rows:
        ratio = row["onnx_over_torchscript"]
        print(f"{row['arch']}: onnx ÷ torchscript {ratio['median']:.2f} "
              f"({ratio['min']:.2f}-{ratio['max']:.2f}), maps agree on {row['map_agreement']:.4%}")
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
