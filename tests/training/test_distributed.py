"""Distributed (DDP) training: two gloo processes on the CPU under torchrun, tiny synthetic data.

The two-process runs take about 20 s each on a 2-core machine (two interpreters importing
torch, a few MobileNetV3 steps on 48-pixel crops)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import model_from_checkpoint, read_checkpoint
from training.data.sources import LandCoverAITiles
from training.run.device import DeviceError, resolve_device
from training.run.distributed import Group, SourceShare
from training.run.evaluate import evaluate_source, predictor
from training.train import main as train_main

FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "48",
        "--steps-per-epoch", "2", "--seed", "0", "--no-progress", "--max-pictures", "2",
        "--points-per-class", "5", "--epochs", "2"]
RUN_FILES = {"last.pt", "best.pt", "metrics.json", "metrics.csv", "pictures"}


def train_command(*args: str, torchrun: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m training.train ARGS`` (or ``python -m training.train
    --nproc 2 ARGS``, the shortcut), one thread per process."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                 "-m", "training.train"] if torchrun
                else [sys.executable, "-m", "training.train", "--nproc", "2"])
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def straight_run(tiny_landcoverai: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2-process, 2-epoch run started with torchrun."""
    out = tmp_path_factory.mktemp("ddp") / "straight"
    proc = train_command("--data", str(tiny_landcoverai), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_two_processes_write_one_run_and_gather_validation(straight_run, tiny_landcoverai):
    out, proc = straight_run
    # rank 0 alone prints: the start line (both batches), each epoch and the summary once
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("distributed:")] == [
        "distributed: 2 processes (gloo, CPU), batch 2 per process, global batch 4, "
        "2 steps per epoch"]
    assert sum(line.startswith("epoch 1/2") for line in lines) == 1
    assert sum(line.startswith("epoch 2/2") for line in lines) == 1
    assert sum(line.startswith("best val mIoU") for line in lines) == 1

    # one run folder, written by rank 0: pictures of rank 0's block of the validation images
    # only (rank 1 scored the second image and drew nothing)
    assert {p.name for p in out.iterdir()} == RUN_FILES
    val = LandCoverAITiles(tiny_landcoverai, "val")
    assert len(val) == 2
    assert [p.name for p in (out / "pictures").iterdir()] == [f"{val.keys[0]}.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["processes"] == 2 and metrics["config"]["global_batch_size"] == 4
    assert [r["step"] for r in metrics["epochs"]] == [2, 4]

    # the checkpoint holds the unwrapped network (no DDP "module." prefix): export reads it
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])
    model, table = model_from_checkpoint(ckpt, out / "last.pt")

    # validation gathered over both processes = one process scoring every image
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each training process ran
    try:
        cm = evaluate_source(predictor(model.eval(), torch.device("cpu")), val, table,
                             progress=False)
    finally:
        torch.set_num_threads(threads)
    recorded = metrics["epochs"][-1]["val_confusion"]
    assert np.asarray(recorded).sum() == sum(m.size for m in (val.load(0).mask, val.load(1).mask))
    assert cm.tolist() == recorded


def test_interrupted_run_resumes_to_the_same_weights(straight_run, tiny_landcoverai, tmp_path):
    common = ["--data", str(tiny_landcoverai), "--out", str(tmp_path / "split"), *FAST]
    first = train_command(*common, "--stop-after", "1", torchrun=False)  # the --nproc shortcut
    assert first.returncode == 0, first.stderr[-3000:]
    assert read_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 0
    again = train_command(*common, "--resume", torchrun=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("after epoch 1/2") == 1 and "epoch 2/2" in again.stdout
    resumed = read_checkpoint(tmp_path / "split" / "last.pt")
    assert resumed["epoch"] == 1 and len(resumed["history"]) == 2
    straight = read_checkpoint(straight_run[0] / "last.pt")
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("args, message", [
    (["--nproc", "64", "--device", "cuda"], "cuda"),  # no CUDA here, or not 64 GPUs
    (["--nproc", "2", "--device", "cpu", "--sync-bn"], "--sync-bn needs CUDA"),
])
def test_launch_refusals_are_one_line(tiny_landcoverai, tmp_path, capsys, args, message):
    assert train_main(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "x"),
                       *FAST, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_one_gpu_per_process(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", 1, 2) == torch.device("cuda", 1)
    assert resolve_device("auto", 0, 2) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", 0, 1) == torch.device("cuda", 1)
    assert resolve_device("cpu", 3, 4) == torch.device("cpu")
    with pytest.raises(DeviceError, match="need 4 GPUs .* has 2"):
        resolve_device("cuda", 0, 4)
    with pytest.raises(DeviceError, match="names one GPU"):
        resolve_device("cuda:0", 0, 2)


def test_ranks_share_each_global_batch():
    world, batch, steps = 3, 2, 4
    draws = list(range(100, 100 + world * batch * steps))
    shares = [Group(rank=r, world_size=world, backend="gloo").share(draws) for r in range(world)]
    assert sorted(sum(shares, [])) == draws
    for k in range(steps):  # step k of all ranks together = the k-th global batch
        step = sorted(d for s in shares for d in s[k * batch:(k + 1) * batch])
        assert step == draws[k * world * batch:(k + 1) * world * batch]
    blocks = [Group(rank=r, world_size=world, backend="gloo").block(8) for r in range(world)]
    assert [list(b) for b in blocks] == [[0, 1], [2, 3, 4], [5, 6, 7]]


def test_source_share(tiny_landcoverai):
    val = LandCoverAITiles(tiny_landcoverai, "val")
    share = SourceShare(val, [1])
    assert len(share) == 1 and share.keys == [val.keys[1]]
    assert share.size(0) == val.size(1)
    assert np.array_equal(share.load(0).mask, val.load(1).mask)
