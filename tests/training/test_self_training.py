"""Self-training (``--pseudo-labels``): the moving-average teacher, its pseudo labels, the weight
schedule, and a training run that uses them and resumes exactly."""
import json

import pytest
import torch
from torch import nn

from model.checkpoint import read_checkpoint
from model.class_table import IGNORE_INDEX
from training.labels.expansion import PADDING
from training.labels.self_training import Teacher, pseudo_weight_for
from training.losses.terms import Batch, PseudoLabels
from training.train import main as train_main

FAST = ["--arch", "deeplabv3_mobilenet_v3_large", "--batch-size", "2", "--crop-size", "48",
        "--steps-per-epoch", "2", "--seed", "0", "--no-progress", "--max-pictures", "0",
        "--points-per-class", "5"]


class FixedLogits(nn.Module):
    """A stand-in network whose output is a learnable (1, C, H, W) logit map, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.bn = nn.BatchNorm2d(logits.shape[1])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.logits.expand(images.shape[0], -1, -1, -1)}


def test_teacher_moves_a_share_of_the_way_and_copies_the_statistics():
    student = FixedLogits(torch.zeros(1, 3, 2, 2))
    teacher = Teacher(student, decay=0.75)
    with torch.no_grad():
        student.logits.fill_(4.0)
        student.bn.running_mean.fill_(2.5)
    teacher.update()
    assert torch.allclose(teacher.network.logits, torch.full((1, 3, 2, 2), 1.0))  # 0.25 of 4
    assert torch.equal(teacher.network.bn.running_mean, torch.full((3,), 2.5))
    teacher.update()
    assert torch.allclose(teacher.network.logits, torch.full((1, 3, 2, 2), 1.75))
    assert not teacher.network.logits.requires_grad
    with pytest.raises(ValueError):
        Teacher(student, decay=1.0)


def test_pseudo_labels_only_where_confident_unclicked_and_inside_the_crop():
    # 3 classes on a 2 x 3 grid: column 0 sure of class 2, column 1 unsure, column 2 sure of 0.
    logits = torch.zeros(1, 3, 2, 3)
    logits[0, 2, :, 0] = 10.0
    logits[0, 0, :, 2] = 10.0
    teacher = Teacher(FixedLogits(logits), decay=0.5)
    images = torch.zeros(1, 3, 2, 3)
    targets = torch.full((1, 2, 3), IGNORE_INDEX)
    targets[0, 0, 0] = 1          # a clicked point keeps its own label
    targets[0, 1, 2] = PADDING    # crop padding gets none
    pseudo = teacher.pseudo_labels(images, targets, threshold=0.9)
    expected = torch.tensor([[[IGNORE_INDEX, IGNORE_INDEX, 0], [2, IGNORE_INDEX, IGNORE_INDEX]]])
    assert torch.equal(pseudo, expected)
    # at threshold 0 the unsure column is labelled too (its argmax: the first class)
    assert (teacher.pseudo_labels(images, targets, threshold=0.0)[0, :, 1] == 0).all()


def test_the_term_pulls_the_student_towards_the_teacher_labels():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1] = 5.0  # the teacher is sure of class 1 everywhere
    teacher = Teacher(FixedLogits(logits), decay=0.5)
    student = torch.zeros(1, 2, 1, 2, requires_grad=True)
    term = PseudoLabels(teacher, threshold=0.9, weight=2.0, start=0.0, epochs=1, gamma=0.0,
                        alpha=None)
    term.start_epoch(0)
    batch = Batch.of(torch.zeros(1, 3, 1, 2), torch.full((1, 1, 2), IGNORE_INDEX))
    loss = term.weight * term.value(student, batch)
    loss.backward()
    assert loss.item() == pytest.approx(2.0 * torch.log(torch.tensor(2.0)).item())  # 2 x CE at 0.5
    assert (student.grad[0, 1] < 0).all() and (student.grad[0, 0] > 0).all()
    assert term.labelled_share == [1.0]


def test_weight_waits_for_the_second_half_and_ramps_up():
    assert [pseudo_weight_for(1.0, 0.5, 8, e) for e in range(8)] == [0, 0, 0, 0, 0.5, 1, 1, 1]
    assert [pseudo_weight_for(2.0, 0.0, 2, e) for e in range(2)] == [2.0, 2.0]
    assert [pseudo_weight_for(1.0, 1.0, 4, e) for e in range(4)] == [0, 0, 0, 0]


def test_a_run_with_pseudo_labels_records_them_and_resumes_exactly(tiny_landcoverai, tmp_path, capsys):
    common = ["--data", str(tiny_landcoverai), *FAST, "--epochs", "2", "--pseudo-labels",
              "--pseudo-start", "0.5", "--pseudo-threshold", "0", "--teacher-decay", "0.5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main([*common, "--out", str(straight)]) == 0
    epochs = json.loads((straight / "metrics.json").read_text())["epochs"]
    assert [e["pseudo_labels"]["weight"] for e in epochs] == [0.0, 1.0]
    assert epochs[1]["pseudo_labels"]["labelled_share"] > 0.5  # threshold 0: every unclicked pixel
    assert train_main([*common, "--out", str(split), "--stop-after", "1"]) == 0
    assert train_main([*common, "--out", str(split), "--resume"]) == 0
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(split / "last.pt")
    for part in ("model", "teacher"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("other", ["--plain", "--dense"])
def test_pseudo_labels_refuse_plain_and_dense(tiny_landcoverai, tmp_path, capsys, other):
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(tiny_landcoverai), "--out", str(tmp_path / "x"), *FAST[:-2],
                    "--pseudo-labels", other])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pseudo-labels" in err[0] and other in err[0]

