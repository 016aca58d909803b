"""End-to-end: the training CLI on a tiny synthetic set, export, and evaluation."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import read_checkpoint
from model.export import main as export_main
from training.run.evaluate import main as evaluate_main
from training.train import main as train_main

FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "48",
        "--steps-per-epoch", "1", "--seed", "0", "--no-progress", "--max-pictures", "2"]


def test_two_step_run_writes_checkpoints_metrics_and_pictures(tiny_landcoverai, tmp_path):
    out = tmp_path / "run"
    assert train_main(["--data", str(tiny_landcoverai), "--out", str(out), "--epochs", "2",
                       "--points-per-class", "5", "--aux-loss", *FAST]) == 0
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["classes"]["classes"][1]["name"] == "building"
    assert (out / "best.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["step"] for r in metrics["epochs"]] == [1, 2]
    assert all(0.0 <= r["val_miou"] <= 1.0 for r in metrics["epochs"])
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_miou" in header and "iou_woodland" in header
    pictures = sorted((out / "pictures").glob("*.png"))
    assert len(pictures) == 2
    with Image.open(pictures[0]) as im:  # 4 panels of 64 px + 3 gaps, 16 px title row, legend
        assert im.size[0] == 4 * 64 + 12 and im.size[1] >= 64 + 16 + 18

    model_path = tmp_path / "geoseg.pt"
    assert export_main(["--checkpoint", str(out / "best.pt"), "--out", str(model_path),
                        "--parity-size", "32"]) == 0
    scores_path = tmp_path / "scores.json"
    assert evaluate_main(["--model", str(model_path), "--data", str(tiny_landcoverai),
                          "--split", "test", "--json", str(scores_path)]) == 0
    scores = json.loads(scores_path.read_text())
    assert set(scores["iou"]) == {"background", "building", "woodland", "water", "road"}


def test_resumed_run_equals_uninterrupted_run(tiny_landcoverai, tmp_path, capsys):
    common = ["--data", str(tiny_landcoverai), "--points-per-class", "5", *FAST]
    assert train_main([*common, "--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert train_main([*common, "--out", str(tmp_path / "split"), "--epochs", "2",
                       "--stop-after", "1"]) == 0
    assert read_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 0
    capsys.readouterr()
    assert train_main([*common, "--out", str(tmp_path / "split"), "--epochs", "2", "--resume"]) == 0
    assert "after epoch 1/2" in capsys.readouterr().out
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

    # Resuming a finished run says so and trains nothing.
    last = tmp_path / "split" / "last.pt"
    before = last.stat().st_mtime_ns
    assert train_main([*common, "--out", str(tmp_path / "split"), "--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished all 2 epochs" in out and "resumed from" not in out
    assert "epoch 3" not in out and last.stat().st_mtime_ns == before


def test_dense_and_folder_datasets_train(tiny_folders, tmp_path):
    assert train_main(["--data", str(tiny_folders), "--dataset", "folders", "--dense",
                       "--out", str(tmp_path / "dense"), "--epochs", "1", *FAST]) == 0
    assert (tmp_path / "dense" / "best.pt").is_file()


def test_point_file_training(tiny_landcoverai, tmp_path):
    csv = tmp_path / "points.csv"
    csv.write_text("image,x,y,class\nscene_0000.jpg,3,4,background\nscene_0001.jpg,10,10,2\n")
    assert train_main(["--data", str(tiny_landcoverai), "--point-file", str(csv),
                       "--out", str(tmp_path / "pf"), "--epochs", "1", *FAST]) == 0
    csv.write_text("image,x,y,class\nscene_0000.jpg,300,4,background\n")
    assert train_main(["--data", str(tiny_landcoverai), "--point-file", str(csv),
                       "--out", str(tmp_path / "pf2"), "--epochs", "1", *FAST]) == 2


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent"], "dataset folder /nonexistent does not exist"),
    (["--pretrained", "/nonexistent.pth"], "does not exist"),
])
def test_cli_bad_input_is_one_line_and_nonzero(tiny_landcoverai, tmp_path, args, message):
    base = {"--data": str(tiny_landcoverai), "--out": str(tmp_path / "x"), "--epochs": "1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [t for kv in base.items() for t in kv]
    proc = subprocess.run([sys.executable, "-m", "training.train", *flat, *FAST],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_runs():
    for module in ("training.train", "training.run.evaluate", "training.data.synthetic", "model.export",
                   "training.points.simulated", "training.points.report", "tools.figure_map",
                   "training.experiments.ablation_pictures"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "usage" in proc.stdout


def test_one_point_file_for_a_folders_project_at_half_scale(tiny_folders, tmp_path):
    """One CSV names training and validation images by their paths under the root (images/
    included); with --scale 0.5 its pixel coordinates stay the stored images' and move to the
    resized ones; the validation pictures show the file's points; metrics say no simulation."""
    from training.data.options import open_source
    from training.run.inputs import read_annotations
    from training.train import parse_args

    csv = tmp_path / "points.csv"
    csv.write_text("image,x,y,class\n"
                   "train/images/scene_0000.png,47,46,0\n"
                   "train/scene_0001,10,20,1\n"
                   "val/images/scene_0004.png,30,2,1\n")
    args = parse_args(["--data", str(tiny_folders), "--dataset", "folders", "--point-file",
                       str(csv), "--scale", "0.5", "--out", str(tmp_path / "pf"), *FAST])
    from model.class_table import ClassTable
    table = ClassTable.load(tiny_folders / "classes.json")
    points = read_annotations(args, [open_source(args, "train", table),
                                     open_source(args, "val", table)], table)
    assert {k: v.tolist() for k, v in points.items()} == {
        "train/scene_0000": [[23, 23, 0]], "train/scene_0001": [[10, 5, 1]],
        "val/scene_0004": [[1, 15, 1]]}
    assert train_main(["--data", str(tiny_folders), "--dataset", "folders", "--point-file",
                       str(csv), "--scale", "0.5", "--out", str(tmp_path / "pf"), "--epochs", "1",
                       *FAST]) == 0
    config = json.loads((tmp_path / "pf" / "metrics.json").read_text())["config"]
    assert config["points_per_class"] is None and config["val_images"] == 2
    with Image.open(tmp_path / "pf" / "pictures" / "val_scene_0004.png") as im:
        picture = np.asarray(im.convert("RGB")).astype(np.int16)[16:16 + 24]  # below the titles
    image, points_panel = picture[:, :24], picture[:, 28:52]  # 24 px panels, 4 px gaps
    dimmed = (image.astype(np.float32) * 0.55).astype(np.int16)
    drawn = np.argwhere(np.abs(points_panel - dimmed).max(axis=2) > 2)
    assert len(drawn) and abs(drawn[:, 0].mean() - 1) <= 2 and abs(drawn[:, 1].mean() - 15) <= 2


def test_a_folders_project_without_val_folder_is_refused(tmp_path, capsys):
    from training.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "d", 2, 0, 0, size=32, seed=1, layout="folders", progress=False)
    for name in ("train",):
        (root / name).rename(root / "tile1")
    code = train_main(["--data", str(root), "--dataset", "folders", "--train-dirs", "tile1",
                       "--out", str(tmp_path / "x"), "--epochs", "1", *FAST])
    assert code == 2 and "no val/ folder" in capsys.readouterr().err


def test_training_on_masks_loads_no_gis_library():
    """The point-layer path alone needs GDAL, PROJ and GEOS: importing the trainer loads none."""
    code = ("import sys, training.train; "
            "print(sorted(m for m in ('rasterio', 'pyogrio', 'pyproj', 'shapely') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
