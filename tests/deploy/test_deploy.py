"""deploy/: the container image, the Kubernetes manifests and the KServe variant.

Offline checks: every Kubernetes object (kustomize base and GPU overlay, rendered here) validates
against the Kubernetes API schemas of ``kubernetes-validate`` in strict mode (unknown fields fail,
as with ``kubectl --validate=strict``); the InferenceServices validate against the OpenAPI schema
of KServe's own CRD (deploy/kserve/crd, made strict the same way); the Dockerfile is read by a
small parser. One integration test starts a real TorchServe from the exact KServe storage layout
(``config/config.properties`` + ``model-store/geoseg.mar``) with the cluster config unchanged, the
ports moved to free loopback ones through TorchServe's own ``TS_*`` environment variables.
"""
from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from tests.handler.test_server import SCENE
from tests.serving import mask_of, png, standin_store
from tools.server import ServerError, TorchServe, java_env, read_properties, torchserve_executable, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve"
CPU_CONFIG = KSERVE / "storage" / "config" / "config.properties"
GPU_CONFIG = KSERVE / "storage-gpu" / "config" / "config.properties"
K8S_VERSIONS = ("1.31.0", "1.37.0")
"""Kubernetes versions whose schemas (shipped by kubernetes-validate) the manifests must pass."""
OVERLAYS = ("base", "gpu")
GATE_PORT = 8080
METRICS_PORT = 8082
MANAGEMENT_PORT = 8081


# --- kustomize, the subset these manifests use -------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")] if path else []


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 ``add`` / ``replace`` / ``remove`` / ``test`` on a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        parent, last = _walk(doc, parts[:-1]), parts[-1]
        kind = op["op"]
        if kind == "test":
            assert _walk(doc, parts) == op["value"], f"patch test failed at {op['path']}"
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("add", "replace"):
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                elif kind == "add":
                    parent.insert(int(last), value)
                else:
                    parent[int(last)] = value
            else:
                if kind == "replace":
                    assert last in parent, f"replace of a missing {op['path']}"
                parent[last] = value
        else:
            raise AssertionError(f"unsupported patch op {kind!r}")
    return doc


def _containers(obj: dict) -> Iterator[dict]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def _set_image(obj: dict, rule: dict) -> None:
    for container in _containers(obj):
        name, _, tag = container["image"].partition(":")
        if name == rule["name"]:
            container["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"


def render(folder: Path) -> list[dict]:
    """The objects ``kubectl apply -k folder`` would send, for this kustomize subset: ``resources``
    (files and folders), ``images`` (newName / newTag) and ``patches`` holding JSON 6902 op lists
    with a kind + name target. Anything else in a kustomization.yaml fails the test."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{folder}/kustomization.yaml uses {unknown}: teach render() first"
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        objects += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for rule in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, rule)
    for patch in kustomization.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        target = patch["target"]
        hits = [i for i, o in enumerate(objects)
                if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        assert len(hits) == 1, f"patch {patch['path']} matches {len(hits)} objects"
        objects[hits[0]] = json_patch(objects[hits[0]], ops)
    return objects


def find(objects: list[dict], kind: str, name: Optional[str] = None) -> dict:
    hits = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def container(deployment: dict, name: str) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, render(K8S / request.param)


# --- Kubernetes schemas ------------------------------------------------------------------------

def test_every_manifest_file_is_in_a_kustomization():
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((K8S / overlay / "kustomization.yaml").read_text())
        listed = set(kustomization.get("resources", [])) | {p["path"] for p in kustomization.get("patches", [])}
        files = {p.name for p in (K8S / overlay).glob("*.yaml")} - {"kustomization.yaml"}
        assert files <= listed, f"{overlay}: not in kustomization.yaml: {sorted(files - listed)}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(rendered, version):
    overlay, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap",
            "PersistentVolumeClaim"} <= kinds
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")


def test_the_validator_rejects_a_wrong_manifest():
    """A negative control: the strict schemas catch a misspelt field and a wrong type."""
    deployment = find(render(K8S / "base"), "Deployment")
    misspelt = json_patch(deployment, [{"op": "add", "path": "/spec/template/spec/containers/0/readynessProbe",
                                        "value": {}}])
    wrong_type = json_patch(deployment, [{"op": "replace", "path": "/spec/replicas", "value": "two"}])
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# --- what the cluster exposes, and how ---------------------------------------------------------

def test_the_service_reaches_only_the_gate_port(rendered):
    _, objects = rendered
    service, deployment = find(objects, "Service"), find(objects, "Deployment")
    named = {p["name"]: p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    assert [named.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]] == [GATE_PORT]
    assert container(deployment, "gate")["ports"][0]["containerPort"] == GATE_PORT
    assert MANAGEMENT_PORT not in named.values() and 8085 not in named.values()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_prometheus_scrapes_the_metrics_port(rendered):
    _, objects = rendered
    deployment = find(objects, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in \
        container(deployment, "torchserve")["ports"]
    policy = find(objects, "NetworkPolicy")
    allowed = sorted(p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"])
    assert allowed == [GATE_PORT, METRICS_PORT]


def test_cluster_configs_bind_torchserve_behind_the_gate():
    for path in (CPU_CONFIG, GPU_CONFIG):
        config = read_properties(path)
        assert config["inference_address"] == "http://127.0.0.1:8085", path
        assert config["management_address"] == f"http://127.0.0.1:{MANAGEMENT_PORT}", path
        assert config["metrics_address"] == f"http://0.0.0.0:{METRICS_PORT}", path
        assert config["grpc_inference_address"] == config["grpc_management_address"] == "127.0.0.1"
        assert config["enable_model_api"] == "false"
        assert config["enable_envvars_config"] == "true"  # KServe's runtime needs it
        assert config["metrics_mode"] == "prometheus"
        model = json.loads(config["model_snapshot"])["models"]["geoseg"]["1.0"]
        assert model["marName"] == "geoseg.mar" and model["minWorkers"] == model["maxWorkers"]
    cpu, gpu = read_properties(CPU_CONFIG), read_properties(GPU_CONFIG)
    assert {k for k in cpu.keys() | gpu.keys() if cpu.get(k) != gpu.get(k)} == {"model_snapshot", "job_queue_size"}


def test_the_config_map_and_the_kserve_storage_hold_the_same_config():
    for overlay, path in (("base", CPU_CONFIG), ("gpu", GPU_CONFIG)):
        config_map = find(render(K8S / overlay), "ConfigMap", "geoseg-config")
        assert config_map["data"]["config.properties"] == path.read_text(), overlay


def test_the_gate_passes_ping_and_predictions_only_and_predictions_only_with_the_key(rendered):
    _, objects = rendered
    template = find(objects, "ConfigMap", "geoseg-gate")["data"]["default.conf.template"]
    locations = re.findall(r"location\s+(=?\s*\S+)\s*\{", template)
    assert locations == ["= /healthz", "= /ping", "= /predictions/geoseg", "/"]
    inference = read_properties(CPU_CONFIG)["inference_address"]
    assert set(re.findall(r"proxy_pass\s+(\S+);", template)) == {inference}
    assert '"Bearer ${GEOSEG_INFERENCE_KEY}" 1;' in template
    predictions = template.split("location = /predictions/geoseg", 1)[1].split("location /", 1)[0]
    assert "if ($geoseg_key_ok = 0)" in predictions and "return 401" in predictions
    assert f"listen {GATE_PORT};" in template
    gate = container(find(objects, "Deployment"), "gate")
    key = next(e for e in gate["env"] if e["name"] == "GEOSEG_INFERENCE_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "geoseg-inference-key", "key": "token"}


def test_no_secret_values_are_committed():
    for path in DEPLOY.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), path


def test_probes_use_ping(rendered):
    _, objects = rendered
    deployment = find(objects, "Deployment")
    torchserve, gate = container(deployment, "torchserve"), container(deployment, "gate")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert torchserve[probe]["exec"]["command"] == ["python", "/opt/geoseg/healthcheck.py"], probe
    assert gate["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}
    env = {e["name"]: e.get("value") for e in torchserve["env"]}
    assert env["GEOSEG_TS_CONFIG"] == "/etc/geoseg/config.properties"
    mounts = {m["name"]: m["mountPath"] for m in torchserve["volumeMounts"]}
    assert mounts["config"] == "/etc/geoseg"
    command = torchserve["command"]
    assert command[command.index("--ts-config") + 1] == env["GEOSEG_TS_CONFIG"]
    assert command[command.index("--model-store") + 1] == mounts["models"] + "/model-store"


def test_pods_run_as_non_root_with_resources(rendered):
    overlay, objects = rendered
    for kind in ("Deployment", "Job"):
        pod = find(objects, kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c.get("securityContext", {}).get("runAsUser", 1) != 0
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
    torchserve = container(find(objects, "Deployment"), "torchserve")
    gpus = torchserve["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (1 if overlay == "gpu" else None)
    assert torchserve["image"] == f"geoseg:0.2.0-{'cuda' if overlay == 'gpu' else 'cpu'}"
    volumes = {v["name"]: v for v in find(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "geoseg-models", "readOnly": True}
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == find(objects, "Deployment")["metadata"]["name"]


# --- KServe --------------------------------------------------------------------------------------

INFERENCE_SERVICES = sorted(KSERVE.glob("inferenceservice*.yaml"))
OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation: an object with
    ``properties`` admits no other field unless it says so (``additionalProperties`` or
    ``x-kubernetes-preserve-unknown-fields``)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def isvc_validator() -> jsonschema.Draft202012Validator:
    """InferenceService v1beta1 from KServe's CRD (deploy/kserve/crd/README.md says which), with
    ``metadata`` checked as a Kubernetes ObjectMeta (kubernetes-validate's definitions)."""
    schema = strict(json.loads(gzip.decompress((KSERVE / "crd" / "inferenceservice-v1beta1.schema.json.gz")
                                                   .read_bytes())))
    schema["properties"]["metadata"] = {"$ref": OBJECT_META}
    schema["properties"]["apiVersion"] = {"const": "serving.kserve.io/v1beta1"}
    schema["properties"]["kind"] = {"const": "InferenceService"}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads((package / f"v{K8S_VERSIONS[-1]}-local-strict" / "_definitions.json").read_text())
    registry = referencing.Registry().with_resource(definitions["$id"], referencing.Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("path", INFERENCE_SERVICES, ids=lambda p: p.name)
def test_inference_services_validate_against_the_kserve_crd(path, isvc_validator):
    errors = sorted(isvc_validator.iter_errors(yaml.safe_load(path.read_text())), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_the_crd_schema_rejects_a_wrong_inference_service(isvc_validator):
    isvc = yaml.safe_load((KSERVE / "inferenceservice-torchserve.yaml").read_text())
    misspelt = json_patch(isvc, [{"op": "add", "path": "/spec/predictor/model/storageURI", "value": "s3://x"}])
    no_format = json_patch(isvc, [{"op": "remove", "path": "/spec/predictor/model/modelFormat/name"}])
    bad_metric = json_patch(isvc, [{"op": "replace", "path": "/spec/predictor/scaleMetric", "value": "gpu"}])
    bad_name = json_patch(isvc, [{"op": "replace", "path": "/metadata/name", "value": 7}])
    for broken in (misspelt, no_format, bad_metric, bad_name):
        assert list(isvc_validator.iter_errors(broken)), broken


KSERVE_SDK_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"


def run_sdk_check(*paths: Path) -> subprocess.CompletedProcess:
    """deploy/kserve/sdk_check.py in the KServe SDK's own environment (made by make setup)."""
    assert KSERVE_SDK_PYTHON.exists(), ("the KServe SDK environment .venv-kserve is missing: "
                                        "run make setup")
    return subprocess.run([str(KSERVE_SDK_PYTHON), str(KSERVE / "sdk_check.py"), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_inference_services_round_trip_through_the_kserve_sdk():
    done = run_sdk_check(*INFERENCE_SERVICES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": ok\n") == len(INFERENCE_SERVICES)


def test_the_kserve_sdk_check_catches_unknown_fields_and_missing_required_ones(tmp_path):
    isvc = yaml.safe_load((KSERVE / "inferenceservice-custom.yaml").read_text())
    misspelt = json_patch(isvc, [{"op": "add", "path": "/spec/predictor/minReplica", "value": 1}])
    nameless = json_patch(isvc, [{"op": "remove", "path": "/spec/predictor/containers/0/name"}])
    files = []
    for name, doc in (("misspelt", misspelt), ("nameless", nameless)):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(doc))
    done = run_sdk_check(*files)
    assert done.returncode == 1
    misspelt_line, nameless_line = done.stdout.splitlines()
    assert "spec.predictor.minReplica: not a field of the SDK's model" in misspelt_line
    assert "the SDK refuses it" in nameless_line and "name" in nameless_line


def test_kserve_storage_layout():
    """KServe's TorchServe runtime reads <storageUri>/config/config.properties and
    <storageUri>/model-store/*.mar (it starts torchserve with exactly these two paths)."""
    for storage in ("storage", "storage-gpu"):
        assert (KSERVE / storage / "config" / "config.properties").is_file()
        assert (KSERVE / storage / "model-store").is_dir()
    runtime = yaml.safe_load((KSERVE / "inferenceservice-torchserve.yaml").read_text())["spec"]["predictor"]
    assert runtime["model"]["modelFormat"]["name"] == "pytorch"
    assert runtime["model"]["runtime"] == "kserve-torchserve"
    for path in (KSERVE / "inferenceservice-custom.yaml", KSERVE / "inferenceservice-custom-gpu.yaml"):
        (custom,) = yaml.safe_load(path.read_text())["spec"]["predictor"]["containers"]
        env = {e["name"]: e["value"] for e in custom["env"]}
        command = custom["command"]
        assert command[command.index("--ts-config") + 1] == "/mnt/models/config/config.properties"
        assert command[command.index("--model-store") + 1] == "/mnt/models/model-store"
        assert env["TS_INFERENCE_ADDRESS"] == "http://0.0.0.0:8080"
        assert env["STORAGE_URI"].endswith("-cuda" if "gpu" in path.name else "-cpu")


# --- the Dockerfile -----------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, ``\\`` continuations joined."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def stages(instructions: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list]]:
    """Global ARG defaults, and each stage's instructions (key: stage name) with its FROM first."""
    args, found, current = {}, {}, None
    for word, rest in instructions:
        if word == "FROM":
            words = rest.split()
            current = words[words.index("AS") + 1] if "AS" in words else str(len(found))
            found[current] = [(word, rest)]
        elif current is None and word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            found[current].append((word, rest))
    return args, found


def chain(found: dict[str, list], target: str) -> list[tuple[str, str]]:
    """The instructions that build ``target``, its parent stages' first."""
    base = found[target][0][1].split()[0]
    return (chain(found, base) if base in found else []) + found[target]


def test_dockerfile_targets_user_healthcheck_ports_and_pins():
    args, found = stages(dockerfile_instructions(DEPLOY / "Dockerfile"))
    assert {"cpu", "cuda"} <= set(found)
    for name, body in found.items():
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], body[0][1].split()[0])
        if base in found:
            continue
        image, _, tag = base.partition(":")
        assert image in ("pytorch/pytorch", "pytorch/torchserve"), f"{name}: {image} is not an official base"
        assert tag and tag != "latest" and re.match(r"\d", tag), f"{name}: base {base} has no pinned tag"
    for target in ("cpu", "cuda"):
        steps = chain(found, target)
        users = [rest for word, rest in steps if word == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), target
        healthchecks = [rest for word, rest in steps if word == "HEALTHCHECK"]
        assert healthchecks and "/opt/geoseg/healthcheck.py" in healthchecks[-1], target
        exposed = {int(p.split("/")[0]) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
        assert exposed == {GATE_PORT, METRICS_PORT}, target
        copied = [rest.split() for word, rest in steps if word == "COPY" and "--from" not in rest]
        config = [c[0] for c in copied if c[-1] == "/opt/geoseg/config/config.properties"]
        assert config == [str((GPU_CONFIG if target == "cuda" else CPU_CONFIG).relative_to(ROOT))], target
        command = json.loads([rest for word, rest in steps if word == "CMD"][-1])
        log_config = command[command.index("--log-config") + 1]  # the frontend's quiet logging
        assert [c[0] for c in copied if c[-1] == log_config] == ["log4j2.xml"], target
    pinned = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    run = next(rest for word, rest in found["base"] if word == "RUN" and "serving.txt" in rest)
    names = re.search(r"\^\(([^)]*)\)==", run).group(1).split("|")
    assert set(names) <= set(pinned), f"not pinned in requirements.txt: {set(names) - set(pinned)}"
    assert f"-eq {len(names)}" in run


def test_the_build_context_holds_what_the_dockerfile_copies():
    """deploy/Dockerfile.dockerignore keeps everything out but what COPY needs."""
    rules = [line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*"
    kept = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    _, found = stages(dockerfile_instructions(DEPLOY / "Dockerfile"))
    for body in found.values():
        for word, rest in body:
            if word == "COPY" and "--from" not in rest:
                source = rest.split()[0].rstrip("/")
                assert (ROOT / source).exists(), source
                assert any(source == k or source.startswith(k + "/") for k in kept), source


# --- deploy/healthcheck.py ----------------------------------------------------------------------

def healthcheck_module():
    spec = importlib.util.spec_from_file_location("geoseg_healthcheck", DEPLOY / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_the_ping_url():
    hc = healthcheck_module()
    assert hc.ping_url(CPU_CONFIG, {}) == "http://127.0.0.1:8085/ping"
    # enable_envvars_config=true: TorchServe, and so the check, take TS_INFERENCE_ADDRESS
    assert hc.ping_url(CPU_CONFIG, {"TS_INFERENCE_ADDRESS": "http://0.0.0.0:8080"}) == "http://127.0.0.1:8080/ping"
    assert hc.ping_url(ROOT / "config.properties", {"TS_INFERENCE_ADDRESS": "http://0.0.0.0:9"}) \
        == "http://127.0.0.1:8080/ping"  # that file does not enable env vars


# --- a real TorchServe from the KServe layout ---------------------------------------------------

class LayoutServer(TorchServe):
    """TorchServe started as KServe's TorchServe runtime starts it, from ``layout`` (holding
    ``config/config.properties`` and ``model-store/``), plus ``--foreground --ncs`` so that the
    test owns the process. The config file is used unchanged; the ports move to free loopback
    ones through TorchServe's ``TS_*`` variables (the config sets ``enable_envvars_config=true``)."""

    def __init__(self, layout: Path, workdir: Path, env: Optional[dict[str, str]] = None) -> None:
        super().__init__(layout / "model-store", workdir=workdir, base_config=layout / "config" / "config.properties")
        self.layout = layout
        self.extra_env = env or {}

    def environment(self) -> dict[str, str]:
        return {"TS_INFERENCE_ADDRESS": self.url, "TS_MANAGEMENT_ADDRESS": self.management_url,
                "TS_METRICS_ADDRESS": self.metrics_url,
                "TS_GRPC_INFERENCE_PORT": str(self.ports["grpc_inference"]),
                "TS_GRPC_MANAGEMENT_PORT": str(self.ports["grpc_management"])}

    def start(self, timeout: float = 240, wait_for_model: bool = True) -> LayoutServer:
        executable = torchserve_executable()
        assert executable, "no `torchserve` executable: run `make setup`"
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        # TS_* variables of the caller's environment would override the config under test.
        inherited = {k: v for k, v in java_env().items() if not k.startswith("TS_")}
        env = {**inherited, **self.environment(), **self.extra_env,
               "LOG_LOCATION": str(self.workdir / "logs"), "METRICS_LOCATION": str(self.workdir / "logs"),
               "TMPDIR": str(self.workdir / "tmp"), "TEMP": str(self.workdir / "tmp")}
        self.log = open(self.workdir / "torchserve.out", "wb")
        self.process = subprocess.Popen(
            [executable, "--start", "--foreground", "--ncs",
             f"--model-store={self.layout / 'model-store'}",
             f"--ts-config={self.layout / 'config' / 'config.properties'}"],
            cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if wait_for_model:
                wait_ready(self.url, "geoseg", timeout, self.process, self.load_failure)
            else:
                self.wait_healthy(timeout)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, ServerError):
                raise ServerError(f"{exc}; log tail:\n{self.log_tail()}") from None
            raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        """/ping Healthy (every model's workers up), without sending a prediction."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"TorchServe exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=5) as r:
                    if json.loads(r.read()).get("status") == "Healthy":
                        return
            except (urllib.error.URLError, ConnectionError, ValueError):
                pass
            time.sleep(0.5)
        raise ServerError(f"TorchServe at {self.url} not Healthy after {timeout:.0f} s")


def kserve_layout(work: Path, config: Path = CPU_CONFIG) -> Path:
    """``work/layout``: config/config.properties (a byte copy of ``config``) and
    model-store/geoseg.mar (the stand-in archive), as under a KServe storageUri."""
    build = work / "build"
    build.mkdir(parents=True)
    layout = work / "layout"
    (layout / "config").mkdir(parents=True)
    (layout / "model-store").mkdir()
    shutil.copyfile(config, layout / "config" / "config.properties")
    shutil.copyfile(standin_store(build) / "geoseg.mar", layout / "model-store" / "geoseg.mar")
    return layout


def post_image(url: str, body: bytes, content_type: str = "application/octet-stream"):
    req = urllib.request.Request(f"{url}/predictions/geoseg", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


@pytest.mark.integration
def test_torchserve_serves_geoseg_from_the_kserve_layout(tmp_path, monkeypatch):
    layout = kserve_layout(tmp_path)
    assert (layout / "config" / "config.properties").read_bytes() == CPU_CONFIG.read_bytes()
    server = LayoutServer(layout, tmp_path / "ts")
    server.start(timeout=300)
    try:
        status, content_type, body = post_image(server.url, png(SCENE))
        assert (status, content_type) == (200, "image/png"), body[:300]
        assert mask_of(body).shape == SCENE.shape[:2]
        # The snapshot in the config, not the archive's model-config.yaml, set the batch size.
        with urllib.request.urlopen(f"{server.management_url}/models/geoseg", timeout=30) as r:
            described = json.loads(r.read())[0]
        snapshot = json.loads(read_properties(CPU_CONFIG)["model_snapshot"])["models"]["geoseg"]["1.0"]
        assert described["batchSize"] == snapshot["batchSize"] != 4
        assert len(described["workers"]) == snapshot["minWorkers"]
        # The probe script agrees, through the same env override TorchServe took.
        monkeypatch.setenv("TS_INFERENCE_ADDRESS", server.url)
        assert healthcheck_module().main(["--config", str(layout / "config" / "config.properties")]) == 0
    finally:
        server.stop()
    assert healthcheck_module().main(["--config", str(layout / "config" / "config.properties"),
                                      "--timeout", "2"]) == 1


@pytest.mark.integration
def test_kserve_v1_envelope_does_not_carry_geoseg_requests(tmp_path):
    """What KServe's TorchServe runtime does to a request (TS_SERVICE_ENVELOPE=kserve, the v1
    protocol): GeoSeg's handler gets the base64 text, not image bytes, and TorchServe answers 503.
    docs/scale-out.md relies on this; when the handler learns the envelope, this test says so."""
    import base64

    server = LayoutServer(kserve_layout(tmp_path), tmp_path / "ts", env={"TS_SERVICE_ENVELOPE": "kserve"})
    server.start(timeout=300, wait_for_model=False)
    try:
        request = {"instances": [{"data": base64.b64encode(png(SCENE)).decode()}]}
        status, _, body = post_image(server.url, json.dumps(request).encode(), "application/json")
    finally:
        server.stop()
    assert status == 503 and b"Unsupported model output data type" in body, (status, body[:300])

