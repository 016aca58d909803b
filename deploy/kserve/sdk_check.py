"""Check KServe manifests against the KServe SDK's own models (run with .venv-kserve's python).

    .venv-kserve/bin/python deploy/kserve/sdk_check.py deploy/kserve/inferenceservice-*.yaml

Each YAML document is deserialised by ``kserve.ApiClient`` into ``V1beta1InferenceService``
(nested Kubernetes types such as ``V1ObjectMeta`` and ``V1Container`` come from the official
``kubernetes`` client, pinned to 31.0.0: later clients describe their types in another syntax
that the SDK's deserialiser does not parse) and serialised back. The SDK's models refuse missing
required fields and values outside their enums, and they drop every key they do not know, so a
document that does not come back unchanged names a field the SDK does not have (a typo, or a
field of another API version). Prints one line per document; exits 1 when any fails.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import kserve.models
import kubernetes.client.models
import yaml
from kserve import ApiClient

KINDS = {"InferenceService": "V1beta1InferenceService"}


class _Response:
    """What ``ApiClient.deserialize`` reads: a body in ``data``."""

    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body)


def _resolve_kubernetes_types() -> None:
    """The SDK's deserialiser looks every type name up in ``kserve.models``; the Kubernetes
    ones (V1ObjectMeta, V1Container, ...) live in the client it depends on."""
    for name in dir(kubernetes.client.models):
        if name.startswith("V1") and not hasattr(kserve.models, name):
            setattr(kserve.models, name, getattr(kubernetes.client.models, name))


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where ``b`` (the round trip) differs from ``a`` (the document)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            where = f"{path}.{key}" if path else key
            if key not in b:
                out.append(f"{where}: not a field of the SDK's model")
            elif key in a:  # a key only the round trip has is the SDK's default: not a problem
                out += differences(a[key], b[key], where)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} came back as {b!r}"]


def check(doc: dict[str, Any], client: ApiClient) -> list[str]:
    """Problems of one document (empty: it round-trips through the SDK unchanged)."""
    model = KINDS.get(doc.get("kind", ""))
    if model is None:
        return [f"kind {doc.get('kind')!r} is not one this check knows ({', '.join(KINDS)})"]
    try:
        obj = client.deserialize(_Response(doc), model)
    except (ValueError, TypeError, AttributeError) as exc:
        return [f"the SDK refuses it: {exc}"]
    return differences(doc, client.sanitize_for_serialization(obj))


def main(argv: list[str]) -> int:
    _resolve_kubernetes_types()
    client = ApiClient()
    failed = False
    for name in argv:
        for i, doc in enumerate(yaml.safe_load_all(Path(name).read_text())):
            problems = check(doc, client)
            failed |= bool(problems)
            print(f"{name}#{i}: " + ("ok" if not problems else "; ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
