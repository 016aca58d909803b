"""Cut the v1beta1 OpenAPI schema out of KServe's InferenceService CRD for tests/deploy/test_deploy.py.

    python deploy/kserve/crd/extract_schema.py serving.kserve.io_inferenceservices.yaml \
        deploy/kserve/crd/inferenceservice-v1beta1.schema.json.gz

Input: the CRD as KServe ships it (``config/crd/full/serving.kserve.io_inferenceservices.yaml``
in the kserve/kserve repository). Output: the ``openAPIV3Schema`` of the ``v1beta1`` version,
``description`` texts dropped (two thirds of the bytes, no effect on validation), as JSON with
sorted keys, gzipped without a timestamp so the same input gives the same bytes.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def extract(crd_text: str, version: str = "v1beta1") -> dict:
    crd = yaml.safe_load(crd_text)
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != "InferenceService":
        raise ValueError("not the InferenceService CustomResourceDefinition")
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return strip_descriptions(entry["schema"]["openAPIV3Schema"])
    raise ValueError(f"the CRD has no version {version}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    schema = extract(Path(args[0]).read_text())
    data = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
    Path(args[1]).write_bytes(gzip.compress(data, mtime=0))
    print(f"wrote {args[1]} ({len(data)} bytes of JSON)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
