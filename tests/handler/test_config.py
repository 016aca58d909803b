"""Settings kept in one place: TorchServe's properties in config.properties, the handler's
defaults in HandlerConfig, and the files derived from them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from handler.inference import HandlerConfig, model_config_yaml
from tools.server import BASE_CONFIG, ServerError, TorchServe, read_properties

ROOT = Path(__file__).resolve().parents[2]
TORCHSERVE_MODEL_KEYS = {"minWorkers", "maxWorkers", "batchSize", "maxBatchDelay",
                         "responseTimeout"}


def test_production_properties_differ_from_the_base_only_in_key_lifetime():
    base = read_properties(ROOT / "config.properties")
    prod = read_properties(ROOT / "config.prod.properties")
    assert BASE_CONFIG == ROOT / "config.properties"
    assert set(base) == set(prod)
    assert {k for k in base if base[k] != prod[k]} == {"token_expiration_min"}
    assert int(prod["token_expiration_min"]) == 60 < int(base["token_expiration_min"])


def test_base_properties_serve_prometheus_metrics_with_geoseg_counters():
    base = read_properties(ROOT / "config.properties")
    assert base["metrics_mode"] == "prometheus"
    assert base["model_metrics_auto_detect"] == "true"  # GeoSeg's counters are not declared
    assert base["metrics_address"] == "http://127.0.0.1:8082"


def test_read_properties_ignores_comments_and_names_a_bad_line(tmp_path):
    path = tmp_path / "c.properties"
    path.write_text("# comment\n! also a comment\n\n a = 1 \nb=x=y\n")
    assert read_properties(path) == {"a": "1", "b": "x=y"}
    path.write_text("a=1\nno separator here\n")
    with pytest.raises(ServerError, match=r"c\.properties:2"):
        read_properties(path)


def test_server_config_is_the_base_with_only_its_own_overrides(tmp_path):
    server = TorchServe(tmp_path / "store", workdir=tmp_path / "ts",
                        extra_config={"max_request_size": 1234})
    written = read_properties_text(server.config_text(), tmp_path)
    base = read_properties(BASE_CONFIG)
    overridden = {"inference_address", "management_address", "metrics_address", "model_store",
                  "max_request_size"}
    assert "load_models" in base and "load_models" not in written
    for key, value in base.items():
        if key not in overridden | {"load_models"}:
            assert written[key] == value, key
    assert written["inference_address"] == server.url
    assert written["management_address"] == server.management_url
    assert written["metrics_address"] == server.metrics_url
    assert written["model_store"] == str((tmp_path / "store").resolve())
    assert written["max_request_size"] == "1234"
    assert written["grpc_inference_port"] == str(server.ports["grpc_inference"])
    added = set(written) - set(base)
    assert added == {"grpc_inference_port", "grpc_management_port"}
    for key in ("inference_address", "management_address", "metrics_address"):
        assert written[key].startswith("http://127.0.0.1:")


def test_server_config_can_start_from_the_production_file(tmp_path):
    server = TorchServe(tmp_path, workdir=tmp_path / "ts",
                        base_config=ROOT / "config.prod.properties")
    assert read_properties_text(server.config_text(), tmp_path)["token_expiration_min"] == "60"


def read_properties_text(text: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "written.properties"
    path.write_text(text)
    return read_properties(path)


def test_model_config_holds_torchserve_keys_and_no_handler_defaults():
    config = yaml.safe_load((ROOT / "model" / "model-config.yaml").read_text())
    assert set(config) == TORCHSERVE_MODEL_KEYS
    assert HandlerConfig.from_mapping(config.get("handler")) == HandlerConfig()


@pytest.mark.parametrize("handler", [
    HandlerConfig(),
    HandlerConfig(tile_size=256, tile_overlap=32, tile_batch_size=16, max_pixels=5_000_000,
                  half_precision=False, channels_last=False, cuda_wait="block"),
])
def test_model_config_yaml_round_trips(handler):
    torchserve = {"minWorkers": 2, "maxWorkers": 2, "batchSize": 8, "maxBatchDelay": 20,
                  "responseTimeout": 900, "deviceType": "gpu"}
    text = model_config_yaml(torchserve, handler)
    loaded = yaml.safe_load(text)
    assert HandlerConfig.from_mapping(loaded["handler"]) == handler
    assert {k: v for k, v in loaded.items() if k != "handler"} == torchserve
    assert list(loaded) == [*torchserve, "handler"]
    assert handler.to_mapping() == loaded["handler"]


def test_model_config_yaml_without_handler_section_and_refusals():
    assert yaml.safe_load(model_config_yaml({"batchSize": 1}, None)) == {"batchSize": 1}
    with pytest.raises(ValueError, match="HandlerConfig"):
        model_config_yaml({"handler": {"tile_size": 64}}, HandlerConfig())
    with pytest.raises(ValueError, match="unknown keys"):
        HandlerConfig.from_mapping({**HandlerConfig().to_mapping(), "tile": 3})
    with pytest.raises(ValueError, match="bad values"):
        HandlerConfig.from_mapping({"cuda_wait": "sleep"})
