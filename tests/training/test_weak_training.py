"""Training with label expansion and the Gated CRF loss, and the ablation driver, end to end."""
import json
import shutil

from training.experiments.ablation import main as ablation_main
from training.train import main as train_main

FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "48",
        "--steps-per-epoch", "1", "--seed", "0", "--no-progress", "--max-pictures", "0"]


def test_expansion_and_crf_run_cache_superpixels_and_switch_the_crf_on_late(tiny_landcoverai, tmp_path):
    out = tmp_path / "weak"
    assert train_main(["--data", str(tiny_landcoverai), "--out", str(out), "--epochs", "2",
                       "--points-per-class", "5", "--expand", "superpixels", "--segment-area", "32",
                       "--crf-weight", "0.05", "--crf-warmup", "1", *FAST]) == 0
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert epochs[0]["superpixels"]["computed"] >= 1
    assert epochs[-1]["superpixels"]["seconds_per_image"] > 0
    assert any((out / "superpixels").glob("*.npz"))
    # a second run over the same images reuses the cache (no SLIC at all)
    again = tmp_path / "again"
    assert train_main(["--data", str(tiny_landcoverai), "--out", str(again), "--epochs", "1",
                       "--points-per-class", "5", "--expand", "superpixels", "--segment-area", "32",
                       "--superpixel-cache", str(out / "superpixels"), *FAST]) == 0
    first = json.loads((again / "metrics.json").read_text())["epochs"][0]["superpixels"]
    assert first["computed"] == 0 and first["cache_hits"] >= 1


def test_plain_refuses_the_weak_options(tiny_landcoverai, tmp_path, capsys):
    try:
        train_main(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "x"), "--plain",
                    "--expand", "superpixels", *FAST])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--plain" in err[0]


def test_ablation_writes_a_table_with_final_and_best_epochs(tiny_landcoverai, tmp_path):
    out = tmp_path / "ablation"
    assert ablation_main([str(out), "--rows", "p10", "dense", "--seeds", "0", "--",
                          "--data", str(tiny_landcoverai), "--epochs", "2", *FAST]) == 0
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| row | seeds | final-epoch mIoU %")
    assert len(table) == 4 and table[-1].startswith("| dense masks") and "| 1.00 |" in table[-1]
    assert (out / "p10-s0" / "metrics.json").is_file()

    # --pool: the runs of several folders together; a repeated seed is one more run
    again = tmp_path / "again"
    shutil.copytree(out / "p10-s0", again / "p10-s0")
    assert ablation_main([str(out), "--pool", str(again), "--rows", "p10", "dense"]) == 0
    pooled = (out / "table.md").read_text().splitlines()
    assert pooled[2].startswith("| 10 points, plain pfCE | 2 runs (seeds 0-0) |")
    assert pooled[3].startswith("| dense masks | 0 |")
