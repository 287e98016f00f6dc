"""Generate CustomResourceDefinitions from the pydantic API types (like controller-gen).

The API types are the one source of truth; ``crds/*.yaml`` are this module's output, and a
unit test fails when they drift. Pydantic emits JSON Schema (draft 2020-12), Kubernetes wants
a *structural* OpenAPI v3 schema, so refs are inlined, ``Optional`` unions collapsed,
exclusive bounds rewritten to OpenAPI 3.0's boolean form, and titles dropped.
"""

from __future__ import annotations

from typing import Any

from braid.api.common import CATEGORY, GROUP, VERSION
from braid.api.v1alpha1.registry import KINDS, KindInfo

_DROP = {"title", "additionalProperties", "$defs", "examples"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        # Optional[X] -> X: absence already means "unset" in a Kubernetes object.
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                rest.pop("default")
            return _resolve({**non_null[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        out[key] = _resolve(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _strip_empty_defaults(node: Any) -> Any:
    """Drop ``default: []`` / ``{}``: the API server would persist noise into every object."""
    if isinstance(node, list):
        return [_strip_empty_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strip_empty_defaults(v) for k, v in node.items()}
    if out.get("default") in ([], {}):
        out.pop("default")
    return out


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, with camelCase field names."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(raw, raw.get("$defs", {}))
    result: dict[str, Any] = _strip_empty_defaults(resolved)
    return result


def render_crd(info: KindInfo) -> dict[str, Any]:
    """The CRD of one kind: namespaced, status subresource, printer columns, category braid."""
    status_schema = openapi_schema(info.status)
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    # Conditions are a map keyed by type, as metav1.Condition lists are.
    if "conditions" in status_schema.get("properties", {}):
        conditions = status_schema["properties"]["conditions"]
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(info.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": info.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                # Only name and generateName may be restricted here. The
                                # bound is enforced and lets the API server estimate the
                                # name rules' cost from it instead of the request size.
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {
                                            "type": "string",
                                            "maxLength": info.name_max_length,
                                        },
                                        "generateName": {
                                            "type": "string",
                                            "maxLength": info.name_max_length,
                                        },
                                    },
                                },
                                "spec": openapi_schema(info.spec),
                                "status": status_schema,
                            },
                            **(
                                {"x-kubernetes-validations": list(info.name_rules)}
                                if info.name_rules
                                else {}
                            ),
                        }
                    },
                }
            ],
        },
    }


def render_all_crds() -> dict[str, dict[str, Any]]:
    """File name (``braid.dev_<plural>.yaml``) to CRD, for every kind."""
    return {f"{GROUP}_{info.plural}.yaml": render_crd(info) for info in KINDS}
