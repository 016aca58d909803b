import json

import pytest
import torch
import torchvision

from model.artifact import load_artifact, save_artifact
from model.builder import PretrainedWeightsError, build_model
from model.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from model.class_table import ClassTable, ClassTableError
from model.export import PARITY_TOLERANCE, export_meta, parity, script_model


def test_default_class_table_is_landcoverai(table):
    assert table.names == ("background", "building", "woodland", "water", "road")
    assert table.class_id("Water") == 3 and table.class_id("4") == 4
    with pytest.raises(KeyError):
        table.class_id("lava")
    assert ClassTable.from_dict(table.to_dict()) == table


def test_class_table_rejects_gaps_in_ids(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]},
                                            {"id": 2, "name": "b", "color": [1, 1, 1]}]}))
    with pytest.raises(ClassTableError, match="without gaps"):
        ClassTable.load(path)


@pytest.mark.parametrize("arch", ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50"])
def test_builder_outputs_logits_of_input_size(arch):
    model = build_model(arch, num_classes=7, aux_loss=True).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 40, 56))
    assert out["out"].shape == (1, 7, 40, 56)


def test_batchnorm_running_statistics_follow_short_training():
    model = build_model("deeplabv3_mobilenet_v3_large", 5)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}


def test_imagenet_without_network_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: must download, and cannot
    with pytest.raises(PretrainedWeightsError, match="--pretrained none"):
        build_model("deeplabv3_mobilenet_v3_large", 5, pretrained="imagenet")


def test_local_backbone_weights_are_loaded(tmp_path):
    plain = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "backbone.pth"
    torch.save(plain.state_dict(), path)
    model = build_model("deeplabv3_mobilenet_v3_large", 5, pretrained=str(path))
    torch.testing.assert_close(model.net.backbone["0"][0].weight, plain.features[0][0].weight)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="no tensor matches"):
        build_model("deeplabv3_mobilenet_v3_large", 5, pretrained=str(tmp_path / "bad.pth"))


def test_export_parity_and_metadata_round_trip(tmp_path, table):
    torch.manual_seed(0)
    model = build_model("deeplabv3_resnet50", table.num_classes, aux_loss=True)
    scripted = script_model(model)
    assert model.net.aux_classifier is not None  # export leaves the training model alone
    assert parity(model, scripted, size=64) <= PARITY_TOLERANCE
    path = tmp_path / "m.pt"
    save_artifact(scripted, export_meta(table, "deeplabv3_resnet50"), path)
    artifact = load_artifact(path)
    loaded = artifact.network
    assert artifact.classes == table
    x = torch.rand(2, 3, 48, 40)
    with torch.inference_mode():
        reference = model.eval()(x)["out"]
        got = loaded(x)
    assert set(got) == {"out"}
    assert (got["out"] - reference).abs().max() <= PARITY_TOLERANCE


def test_parity_check_catches_a_different_network():
    torch.manual_seed(0)
    a = build_model("deeplabv3_mobilenet_v3_large", 3)
    b = build_model("deeplabv3_mobilenet_v3_large", 3)
    assert parity(a, script_model(b), size=32) > PARITY_TOLERANCE


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"arch": "x", "classes": {}, "model": {}, "epoch": 1})
    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"arch": "x", "classes": {}, "model": {}, "epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1  # the old checkpoint survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        read_checkpoint(bad)


def test_the_artifact_reads_its_metadata_as_typed_fields_and_older_exports_still_load(tmp_path):
    """Every metadata key is spelled in model/artifact.py; an export without the newer keys
    (band scaling, training crop) loads with those fields None."""
    from model.artifact import BAND_SCALING, TRAIN_TILE_SIZE
    from tests.standins import ColourRule

    scripted = torch.jit.script(ColourRule().eval())
    table = ClassTable.load()
    old = export_meta(table, "standin")
    save_artifact(scripted, old, tmp_path / "old.pt")
    loaded = load_artifact(tmp_path / "old.pt")
    assert loaded.band_scaling is None and loaded.train_tile_size is None
    assert loaded.arch == "standin" and loaded.classes == table
    scaling = {"low": [0.0, 0.0, 0.0], "high": [4000.0, 4000.0, 4000.0]}
    save_artifact(scripted, export_meta(table, "standin", {BAND_SCALING: scaling,
                                                           TRAIN_TILE_SIZE: 256}),
                  tmp_path / "new.pt")
    loaded = load_artifact(tmp_path / "new.pt")
    assert loaded.band_scaling == scaling and loaded.train_tile_size == 256
