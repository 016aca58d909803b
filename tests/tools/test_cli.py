"""Command-line manners of train, evaluate, export and synthetic (common/cli.py): one line
``error: ...`` and exit code 2 for a bad path or value, defaults in ``--help``, contradicting
options refused, nothing replaced without ``--overwrite``. In-process and fast: no training."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from model.export import main as export_main
from tools.cli import SUBCOMMANDS
from tools.cli import main as geoseg_main
from training.data.synthetic import main as synthetic_main
from training.run.evaluate import main as evaluate_main
from training.train import main as train_main

Main = Callable[[list[str]], int]


def run(main: Main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code (argparse's SystemExit included), stdout and stderr of ``main(argv)``."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Paths for the cases: a data folder, files that exist (their content does not matter:
    every case is refused before they are read) and ones that do not."""
    (tmp_path / "data").mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"a run's checkpoint")
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"something a user relies on")
    return {"data": tmp_path / "data", "run": run_dir, "existing": existing,
            "missing": tmp_path / "missing.csv", "new": tmp_path / "new"}


def train_args(files: dict[str, Path], *extra: str, out: Path | None = None) -> list[str]:
    return ["--data", str(files["data"]), "--out", str(out or files["new"]), "--epochs", "1",
            "--no-progress", *extra]


def test_missing_point_file(files, capsys):
    code, _, err = run(train_main, train_args(files, "--point-file", str(files["missing"])), capsys)
    assert_one_line_error(code, err, "--point-file", str(files["missing"]))


def test_missing_classes_file(files, capsys):
    code, _, err = run(train_main, train_args(files, "--classes", str(files["missing"])), capsys)
    assert_one_line_error(code, err, "--classes", str(files["missing"]))


@pytest.mark.parametrize("main, flag", [(export_main, "--checkpoint"), (evaluate_main, "--model")])
def test_missing_checkpoint(files, capsys, main, flag):
    argv = [flag, str(files["missing"]), "--out" if main is export_main else "--data",
            str(files["new"] if main is export_main else files["data"])]
    code, _, err = run(main, argv, capsys)
    assert_one_line_error(code, err, flag, "no such file")


@pytest.mark.parametrize("options, message", [
    (["--points-per-class", "10", "--dense"], "not allowed with argument --points-per-class"),
    (["--point-file", "{existing}", "--dense"], "not allowed with argument --point-file"),
    (["--points-per-class", "5", "--point-file", "{existing}"], "not allowed"),
    (["--resume", "--overwrite"], "not allowed with argument --resume"),
])
def test_contradicting_training_options(files, capsys, options, message):
    options = [o.format(existing=files["existing"]) for o in options]
    code, _, err = run(train_main, train_args(files, *options), capsys)
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("options, message", [
    (["--batch-size", "1"], "--batch-size: must be at least 2"),
    (["--epochs", "0"], "--epochs: must be at least 1"),
    (["--lr", "0"], "--lr: must be above 0"),
    (["--points-per-class", "ten"], "'ten' is not an integer"),
    (["--device", "gpu0"], "--device 'gpu0' is not a device"),
])
def test_bad_training_values(files, capsys, options, message):
    code, _, err = run(train_main, train_args(files, *options), capsys)
    assert_one_line_error(code, err, message)


def test_training_into_a_run_needs_resume_or_overwrite(files, capsys):
    code, _, err = run(train_main, train_args(files, out=files["run"]), capsys)
    assert_one_line_error(code, err, str(files["run"]), "--resume", "--overwrite")
    # --overwrite gets past the refusal (then fails on the empty data folder): the old run is
    # only replaced once a new epoch is done.
    code, _, err = run(train_main, train_args(files, "--overwrite", out=files["run"]), capsys)
    assert_one_line_error(code, err, "neither LandCover.ai")
    assert (files["run"] / "last.pt").read_bytes() == b"a run's checkpoint"


def test_export_refuses_existing_out(files, capsys):
    argv = ["--checkpoint", str(files["existing"]), "--out", str(files["existing"])]
    code, _, err = run(export_main, argv, capsys)
    assert_one_line_error(code, err, "exists; pass --overwrite")
    assert files["existing"].read_bytes() == b"something a user relies on"


def test_evaluate_refuses_existing_json(files, capsys):
    argv = ["--model", str(files["existing"]), "--data", str(files["data"]),
            "--json", str(files["existing"])]
    code, _, err = run(evaluate_main, argv, capsys)
    assert_one_line_error(code, err, "--json", "exists; pass --overwrite")


def test_synthetic_refuses_existing_scene_and_dataset(files, capsys):
    code, _, err = run(synthetic_main, ["--scene", str(files["existing"])], capsys)
    assert_one_line_error(code, err, "exists; pass --overwrite")
    code, _, err = run(synthetic_main, ["--out", str(files["run"])], capsys)
    assert_one_line_error(code, err, "not empty; pass --overwrite")
    code, _, err = run(synthetic_main, ["--scene", str(files["new"]), "--size", "4"], capsys)
    assert_one_line_error(code, err, "--size")


@pytest.mark.parametrize("main, option", [
    (train_main, "--epochs"), (evaluate_main, "--split"), (export_main, "--parity-size"),
    (synthetic_main, "--size"),
])
def test_help_shows_defaults(capsys, main, option):
    code, out, _ = run(main, ["--help"], capsys)
    assert code == 0 and out.startswith("usage: geoseg ")
    option_help = out[out.index(f"  {option} "):]
    assert "(default:" in option_help.split("\n  -")[0]
    assert out.count("(default:") >= 3


def test_points_per_class_help_names_its_default(capsys):
    _, out, _ = run(train_main, ["--help"], capsys)
    assert "(default: 10 unless --point-file or --dense)" in " ".join(out.split())


def test_geoseg_help_lists_subcommands(capsys):
    code, out, _ = run(geoseg_main, ["--help"], capsys)
    assert code == 0
    for name in ("train", "evaluate", "export", "synthetic", *SUBCOMMANDS):
        assert f"  {name} " in out


def test_geoseg_command_bad_path_is_one_line(files):
    geoseg = Path(sys.executable).with_name("geoseg")
    assert geoseg.is_file(), f"{geoseg} missing: pip install -e . (make setup)"
    proc = subprocess.run([str(geoseg), "train", *train_args(files, "--point-file",
                                                             str(files["missing"]))],
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, "--point-file")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
