"""Validate emitted manifests against the real schemas, offline.

Custom resources (TrainJob, PyTorchJob, Volcano Job, KFP Pipeline/PipelineVersion) are checked against
the upstream CRDs' `openAPIV3Schema` in ../shared/k8s-crds, made strict the way the API server treats
structural schemas with pruning: an object that lists its properties accepts no others (unless it is
marked x-kubernetes-preserve-unknown-fields). Built-in kinds go to `kubernetes-validate`, which bundles
the Kubernetes OpenAPI schemas, in strict mode. CEL rules are not evaluated, except the metadata.name
rules every kind shares, which are checked here by hand. Emitted manifests must hold no null values."""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "k8s-crds"
KUBERNETES_VERSION = "1.31.0"  # kubernetes-validate's schemas for the API level of kubernetes<31 (kfp's pin)
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035 label


def _strict(node):
    """A copy of an OpenAPI v3 schema as JSON Schema, with unknown fields rejected."""
    if isinstance(node, list):
        return [_strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _strict(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


@functools.lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """{(apiVersion, kind): strict JSON schema} for every version served by the CRDs."""
    if not CRD_DIR.is_dir():
        raise FileNotFoundError(f"{CRD_DIR}: the upstream CRDs (shared/k8s-crds) are not beside the checkout")
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


def nulls(value, path: str = "") -> list[str]:
    """Paths holding None."""
    if value is None:
        return [path or "."]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


def problems(manifest: dict) -> list[str]:
    """Everything wrong with one manifest (empty when it validates): nulls, the schema, and the admission rules
    the cluster's webhooks and API server apply beyond it (helpers/admission.py)."""
    from helpers.admission import admission_problems

    found = [f"null at {p}" for p in nulls(manifest)]
    name = (manifest.get("metadata") or {}).get("name", "")
    if not NAME.match(name) or len(name) > 63:
        found.append(f"metadata.name {name!r} is not an RFC 1035 label of at most 63 characters")
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    schema = crd_schemas().get(key)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        found += [f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in validator.iter_errors(manifest)]
        return found or admission_problems(manifest)  # the webhooks see only what the schema admitted
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        found.append(f"{'.'.join(map(str, exc.path)) or '.'}: {exc.message}")
    return found or admission_problems(manifest)


def assert_valid(manifest: dict, what: str = "") -> None:
    errors = problems(manifest)
    assert not errors, f"{what or manifest.get('kind')}: " + "; ".join(errors[:5])
