"""``geoseg demo``: the whole product on synthetic data, no download.

Writes a synthetic dataset (if missing), trains a small DeepLabV3 from 10 points per class,
exports it to ``--model`` (replacing that file), evaluates it on the test split, builds the
TorchServe archive, starts TorchServe, segments a generated 1280 x 768 scene over HTTP in three
formats (mask PNG, overlay JPEG, JSON statistics), writes ``demo.png`` and stops the server.
``--serve-only`` skips to the serving half with an existing archive and any ``--image``.

    geoseg demo
    geoseg demo --serve-only --image my_photo.jpg
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.cli import fail, parser
from model.class_table import ClassTable, ClassTableError
from tools.archive import ArchiveError, build_archive
from tools.server import ServerError, TorchServe


@dataclass(frozen=True)
class DemoSettings:
    """The demo's training budget: a few CPU minutes. The product's reference model is
    deeplabv3_resnet50 (about 16x the compute of the MobileNetV3 variant)."""

    arch: str = "deeplabv3_mobilenet_v3_large"
    points_per_class: int = 10
    epochs: int = 4
    steps_per_epoch: int = 40
    crop_size: int = 192
    batch_size: int = 8
    data: Path = Path("data/synthetic")
    run: Path = Path("runs/demo")
    model: Path = Path("model/geoseg.pt")
    model_store: Path = Path("model_store")
    out: Path = Path("demo_out")
    scene_size: tuple[int, int] = (768, 1280)  # height, width
    scene_seed: int = 2030


def request(url: str, body: bytes, fmt: str, auth: dict[str, str]) -> tuple[bytes, float]:
    """PUT the raw image (like ``curl -T``) asking for ``fmt``, with the ``auth`` header;
    (response body, seconds)."""
    req = urllib.request.Request(url, data=body, method="PUT",
                                 headers={"X-GeoSeg-Format": fmt,
                                          "Content-Type": "application/octet-stream", **auth})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.read(), time.perf_counter() - t0


def read_truth(path: str | Path, table: ClassTable) -> np.ndarray:
    """(H, W) class ids from a mask of ids (one band) or of class colours (RGB)."""
    with Image.open(path) as im:
        mask = np.asarray(im.convert("RGB") if im.mode in ("RGB", "RGBA", "P") else im)
    return table.mask_from_colors(mask) if mask.ndim == 3 else mask


TEXT_HEIGHT = 44
"""Pixels of a caption or legend strip; the text is about 60% of it."""


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=int(TEXT_HEIGHT * 0.6))


def legend_strip(table: ClassTable, width: int, height: int = TEXT_HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8: a colour box and the name of each class."""
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw, font = ImageDraw.Draw(strip), _font()
    x, box = 12, height - 16
    for name, color in zip(table.names, table.colors):
        draw.rectangle([x, 8, x + box, 8 + box], fill=tuple(color), outline=(0, 0, 0))
        draw.text((x + box + 10, height // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        x += box + 10 + int(draw.textlength(name, font=font)) + 36
    return np.asarray(strip)


def caption(text: str, width: int, height: int = TEXT_HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8 white strip with ``text``."""
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((10, height // 2), text, fill=(0, 0, 0), font=_font(), anchor="lm")
    return np.asarray(strip)


def demo_picture(scene: np.ndarray, colours: np.ndarray, overlay: np.ndarray,
                 table: ClassTable) -> np.ndarray:
    """Scene | served mask | overlay, each captioned, with the class colours' legend below."""
    gap = np.full((scene.shape[0], 8, 3), 255, np.uint8)
    panels = []
    for label, panel in (("input scene", scene), ("served class mask", colours),
                         ("overlay", overlay)):
        panels.append(np.concatenate([caption(label, panel.shape[1]), panel], axis=0))
        panels.append(np.concatenate([np.full((TEXT_HEIGHT, 8, 3), 255, np.uint8), gap], axis=0))
    row = np.concatenate(panels[:-1], axis=1)
    return np.concatenate([row, legend_strip(table, row.shape[1])], axis=0)


def segment_over_http(model_store: Path, image_path: Path, out: Path,
                      truth: Optional[Path]) -> int:
    """Serve ``model_store``, segment ``image_path`` as PNG, overlay and JSON, write demo.png."""
    out.mkdir(parents=True, exist_ok=True)
    image = image_path.read_bytes()
    try:
        with Image.open(image_path) as im:
            scene = np.asarray(im.convert("RGB"))
    except OSError as exc:
        return fail(f"{image_path}: not an image ({exc})")
    t0 = time.perf_counter()
    try:
        server = TorchServe(model_store, workdir=out / "torchserve").start()
    except ServerError as exc:
        return fail(str(exc), 1)
    print(f"TorchServe ready at {server.url} in {time.perf_counter() - t0:.1f} s")
    try:
        url = f"{server.url}/predictions/geoseg"
        for fmt, name in (("png", "mask.png"), ("overlay", "overlay.jpg"), ("json", "summary.json")):
            answer, seconds = request(url, image, fmt, server.auth())
            (out / name).write_bytes(answer)
            print(f"{fmt:>8}: {out / name} ({len(answer) / 1e3:.0f} kB, {seconds:.2f} s)")
    except urllib.error.HTTPError as exc:
        return fail(f"the server answered {exc.code}: {exc.read()[:300]!r}", 1)
    finally:
        server.stop()
    summary = json.loads((out / "summary.json").read_text())
    table = ClassTable.from_dict({"classes": summary["classes"]})
    with Image.open(out / "mask.png") as im:
        classes = np.asarray(im)
        colours = np.asarray(im.convert("RGB"))
    with Image.open(out / "overlay.jpg") as im:
        overlay = np.asarray(im.convert("RGB"))
    Image.fromarray(demo_picture(scene, colours, overlay, table)).save(out / "demo.png")
    shares = ", ".join(f"{c['name']} {100 * c['fraction']:.1f}%" for c in summary["classes"])
    print(f"image {scene.shape[1]}x{scene.shape[0]}: {shares}")
    if truth:
        try:
            ids = read_truth(truth, table)
        except (OSError, ClassTableError) as exc:
            return fail(f"--truth {truth}: {exc}")
        if ids.shape != classes.shape:
            return fail(f"--truth {truth} is {ids.shape[1]}x{ids.shape[0]}, the image "
                        f"{classes.shape[1]}x{classes.shape[0]}")
        print(f"pixel accuracy against {truth}: {100 * float((classes == ids).mean()):.1f}%")
    print(f"wrote {out / 'demo.png'} (image | mask | overlay, with the class legend); server stopped")
    return 0


def train_export_archive(s: DemoSettings) -> int:
    """Synthetic data -> training -> export -> test-split evaluation -> archive."""
    from model.export import main as export_main
    from training.data.synthetic import write_dataset
    from training.run.evaluate import main as evaluate_main
    from training.train import main as train_main

    if not (s.data / "train.txt").exists():
        write_dataset(s.data, 48, 12, 12, size=256, seed=0)
    steps = [
        ("train", train_main, ["--data", str(s.data), "--out", str(s.run), "--arch", s.arch,
                               "--points-per-class", str(s.points_per_class),
                               "--epochs", str(s.epochs), "--steps-per-epoch", str(s.steps_per_epoch),
                               "--batch-size", str(s.batch_size), "--crop-size", str(s.crop_size),
                               "--overwrite"]),
        ("export", export_main, ["--checkpoint", str(s.run / "best.pt"), "--out", str(s.model),
                                 "--overwrite"]),
        ("evaluate", evaluate_main, ["--model", str(s.model), "--data", str(s.data), "--split", "test",
                                     "--pictures", str(s.run / "test-pictures"), "--max-pictures", "4"]),
    ]
    for name, step, argv in steps:
        print(f"== geoseg {name} {' '.join(argv)}", flush=True)
        code = step(argv)
        if code:
            return code
    try:
        print(f"wrote {build_archive(s.model, s.model_store)}")
    except ArchiveError as exc:
        return fail(str(exc), 1)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    defaults = DemoSettings()
    p = parser("geoseg demo", __doc__)
    p.add_argument("--arch", default=defaults.arch)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    p.add_argument("--model", type=Path, default=defaults.model,
                   help="where the exported model is written (replaced)")
    p.add_argument("--model-store", type=Path, default=defaults.model_store)
    p.add_argument("--out", type=Path, default=defaults.out, help="folder for the demo's answers")
    p.add_argument("--serve-only", action="store_true",
                   help="skip training: serve the existing archive and segment --image")
    p.add_argument("--image", type=Path, default=None,
                   help="image to segment (default: a generated scene, out/scene.png)")
    p.add_argument("--truth", type=Path, default=None,
                   help="mask of class ids or class colours to report pixel accuracy against")
    args = p.parse_args(argv)
    settings = DemoSettings(arch=args.arch, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                            model=args.model, model_store=args.model_store, out=args.out)
    for path in (args.image, args.truth):
        if path is not None and not path.is_file():
            return fail(f"{path}: no such file")
    if not args.serve_only:
        code = train_export_archive(settings)
        if code:
            return code
    elif not (args.model_store / "geoseg.mar").is_file():
        return fail(f"{args.model_store / 'geoseg.mar'} not found: run `geoseg archive` first")
    image, truth = args.image, args.truth
    if image is None:
        from training.data.synthetic import write_scene

        image, truth = write_scene(settings.out / "scene.png", *settings.scene_size,
                                   settings.scene_seed)
    return segment_over_http(settings.model_store, image, settings.out, truth)


if __name__ == "__main__":
    sys.exit(main())
