"""One reference page per custom resource, generated from the same schema as the CRDs. Pure.

The pages cannot drift from what the API server enforces: they are rendered from the
structural schema the CRDs carry (types, defaults, ranges, enums, CEL rules and the field
descriptions ``kubectl explain`` shows).
"""

from __future__ import annotations

from typing import Any

from braid.api.common import API_VERSION
from braid.api.v1alpha1.registry import KindInfo
from braid.render.crds import openapi_schema


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        parts.append(("> " if node.get("exclusiveMinimum") else "≥ ") + f"{node['minimum']}")
    if "maximum" in node:
        parts.append(("< " if node.get("exclusiveMaximum") else "≤ ") + f"{node['maximum']}")
    if "minLength" in node or "maxLength" in node:
        parts.append(f"length {node.get('minLength', 0)}..{node.get('maxLength', '∞')}")
    if "minItems" in node or "maxItems" in node:
        parts.append(f"items {node.get('minItems', 0)}..{node.get('maxItems', '∞')}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    if "default" in node:
        parts.append(f"default `{node['default']}`")
    return "; ".join(parts)


def _type(node: dict[str, Any]) -> str:
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    return kind


def _rows(node: dict[str, Any], prefix: str, out: list[str], rules: list[str]) -> None:
    required = set(node.get("required", []))
    for rule in node.get("x-kubernetes-validations", []):
        rules.append(f"- `{prefix or 'spec'}`: {rule['message']} (`{rule['rule']}`)")
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        desc = " ".join(str(prop.get("description", "")).split())
        flag = "yes" if name in required else ""
        cells = [f"`{path}`", _type(prop), flag, desc, _constraints(prop)]
        # A bare "|" in a pattern or description would split the Markdown table cell.
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if prop.get("type") == "object":
            _rows(prop, path, out, rules)
        items = prop.get("items", {})
        if prop.get("type") == "array" and items.get("type") == "object":
            _rows(items, f"{path}[]", out, rules)


def render_kind_reference(info: KindInfo) -> str:
    """The Markdown reference page of one kind."""
    spec_rows: list[str] = []
    rules: list[str] = []
    _rows(openapi_schema(info.spec), "spec", spec_rows, rules)
    status_rows: list[str] = []
    _rows(openapi_schema(info.status), "status", status_rows, [])
    header = (
        "| field | type | required | description | constraints |\n| --- | --- | --- | --- | --- |"
    )
    columns = ", ".join(f"`{c['name']}`" for c in info.columns)
    lines = [
        "<!-- Generated from src/braid/api by `make manifests`; do not edit by hand. -->",
        f"# {info.kind}",
        "",
        f"`apiVersion: {API_VERSION}` · `kind: {info.kind}` · plural `{info.plural}` · "
        f"short names {', '.join(f'`{s}`' for s in info.short_names)} · category `braid`",
        "",
        info.description,
        "",
        f"`kubectl get {info.plural}` shows {columns}. Sample: "
        f"[`crds/samples/braid_v1alpha1_{info.kind.lower()}.yaml`]"
        f"(../../crds/samples/braid_v1alpha1_{info.kind.lower()}.yaml).",
        "",
        "## spec",
        "",
        header,
        *spec_rows,
        "",
    ]
    if rules:
        lines += ["## Rules the API server enforces (CEL)", "", *rules, ""]
    lines += ["## status", "", header, *status_rows, ""]
    return "\n".join(lines)
