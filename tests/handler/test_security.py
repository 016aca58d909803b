"""What the server exposes: loopback only, no model registration, and keys enforced by the
development config (``make serve``) as by the production one."""
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.handler.test_server import SCENE
from tests.serving import png, standin_store
from tools.server import TorchServe, read_properties

ROOT = Path(__file__).resolve().parents[2]


def properties(name: str) -> dict[str, str]:
    return read_properties(ROOT / name)


@pytest.mark.parametrize("name", ["config.properties", "config.prod.properties"])
def test_configs_bind_loopback_and_keep_the_model_api_off(name):
    config = properties(name)
    for key in ("inference_address", "management_address", "metrics_address"):
        assert config[key].startswith("http://127.0.0.1:"), key
    assert config["enable_model_api"] == "false"


@pytest.mark.parametrize("name", ["config.properties", "config.prod.properties"])
def test_both_configs_turn_token_authorisation_on(name):
    assert properties(name)["disable_token_authorization"] == "false"


REFUSED = "refused"  # TorchServe 0.12 answers a missing or wrong token 400 InvalidKeyException


def status(url: str, method: str = "GET", key: str | None = None, data: bytes | None = None
           ) -> int | str:
    """The HTTP status, or REFUSED when TorchServe's token check turned the call away."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if data is not None:
        headers["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return REFUSED if exc.code == 400 and b"InvalidKeyException" in body else exc.code


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """TorchServe with the development config as ``make serve`` uses it (only the addresses
    and the model store moved)."""
    work = tmp_path_factory.mktemp("keyed")
    ts = TorchServe(standin_store(work), workdir=work / "ts")
    assert ts.base_config == ROOT / "config.properties"
    ts.start(timeout=300)
    yield ts
    ts.stop()


def key_of(server: TorchServe, kind: str) -> str:
    key = server.key(kind)
    assert key, f"no {kind} key in {server.workdir / 'key_file.json'}"
    return key


def test_without_key_inference_and_management_are_refused(keyed_server):
    image = png(SCENE)
    assert status(f"{keyed_server.url}/predictions/geoseg", "POST", data=image) == REFUSED
    assert status(f"{keyed_server.management_url}/models") == REFUSED
    wrong = "not-the-key"
    assert status(f"{keyed_server.url}/predictions/geoseg", "POST", wrong, image) == REFUSED
    # The inference key does not open the management API.
    assert status(f"{keyed_server.management_url}/models",
                  key=key_of(keyed_server, "inference")) == REFUSED


def test_with_keys_inference_and_management_pass(keyed_server):
    assert status(f"{keyed_server.url}/predictions/geoseg", "POST",
                  key_of(keyed_server, "inference"), png(SCENE)) == 200
    assert status(f"{keyed_server.management_url}/models",
                  key=key_of(keyed_server, "management")) == 200


def test_registering_a_model_over_the_api_is_refused_even_with_the_key(keyed_server):
    url = f"{keyed_server.management_url}/models?url=http://127.0.0.1:9/evil.mar"
    assert status(url, "POST", key_of(keyed_server, "management")) == 405


def worker_count(server: TorchServe) -> int:
    return len(server.workers())


def test_development_config_refuses_worker_scaling_without_the_management_key(keyed_server):
    scale = f"{keyed_server.management_url}/models/geoseg?min_worker=2&max_worker=2&synchronous=true"
    assert worker_count(keyed_server) == 1
    assert status(scale, "PUT") == REFUSED  # any local user, no key
    assert status(scale, "PUT", "not-the-key") == REFUSED
    assert status(scale, "PUT", key_of(keyed_server, "inference")) == REFUSED
    assert worker_count(keyed_server) == 1
    # The owner, with the management key from key_file.json, still can.
    assert status(scale, "PUT", key_of(keyed_server, "management")) == 200
    assert worker_count(keyed_server) == 2
    back = f"{keyed_server.management_url}/models/geoseg?min_worker=1&max_worker=1&synchronous=true"
    assert status(back, "PUT", key_of(keyed_server, "management")) == 200


def test_geoseg_key_prints_the_keys_torchserve_wrote(keyed_server, tmp_path, capsys):
    from tools.cli import main as geoseg

    assert geoseg(["key", "--dir", str(keyed_server.workdir)]) == 0
    assert capsys.readouterr().out.strip() == key_of(keyed_server, "inference")
    assert geoseg(["key", "management", "--dir", str(keyed_server.workdir)]) == 0
    assert capsys.readouterr().out.strip() == key_of(keyed_server, "management")
    assert geoseg(["key", "--dir", str(tmp_path)]) == 1  # no server started there
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no ") and "key_file.json" in err and len(err.splitlines()) == 1
