"""The committed CRDs are the generator's output, and the schemas are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from braid.api.v1alpha1 import KINDS
from braid.render.crds import render_all_crds
from braid.tooling.manifests import crd_documents, reference_documents

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("name", sorted(crd_documents()))
def test_committed_crd_matches_generator(name: str) -> None:
    committed = (CRDS / name).read_text()
    assert committed == crd_documents()[name], f"crds/{name} is stale: run `make manifests`"


def _walk(node: Any, path: str = "") -> list[str]:
    """Paths where a schema breaks the structural rules the API server enforces."""
    bad: list[str] = []
    if isinstance(node, dict):
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "additionalProperties", "$defs"):
            if forbidden in node:
                bad.append(f"{path}:{forbidden}")
        if "properties" in node and node.get("type") != "object":
            bad.append(f"{path}:properties-without-object-type")
        for key, value in node.items():
            bad.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for item in node:
            bad.extend(_walk(item, path))
    return bad


@pytest.mark.parametrize("info", KINDS, ids=lambda i: i.kind)
def test_schema_is_structural(info: Any) -> None:
    crd = render_all_crds()[f"braid.dev_{info.plural}.yaml"]
    version = crd["spec"]["versions"][0]
    assert _walk(version["schema"]) == []
    assert crd["spec"]["names"]["categories"] == ["braid"]
    assert version["subresources"] == {"status": {}}
    assert any(c["name"] == "Ready" for c in version["additionalPrinterColumns"])


def test_every_field_has_a_description() -> None:
    """`kubectl explain` teaches the API only if each spec field says what it is."""
    missing: list[str] = []

    def visit(node: dict[str, Any], path: str) -> None:
        for name, prop in node.get("properties", {}).items():
            if "description" not in prop:
                missing.append(f"{path}.{name}")
            if prop.get("type") == "object":
                visit(prop, f"{path}.{name}")
            if prop.get("type") == "array" and prop.get("items", {}).get("type") == "object":
                visit(prop["items"], f"{path}.{name}[]")

    for name, crd in render_all_crds().items():
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        visit(spec, f"{name}:spec")
    assert missing == []


@pytest.mark.parametrize("name", sorted(reference_documents()))
def test_committed_reference_page_matches_generator(name: str) -> None:
    page = CRDS.parent / "docs" / "crds" / name
    assert page.read_text() == reference_documents()[name], (
        f"docs/crds/{name} is stale: run `make manifests`"
    )


def test_reference_page_lists_fields_rules_and_columns() -> None:
    page = reference_documents()["link.md"]
    assert "| `spec.architecture.reduction` | integer |" in page
    assert "lin > lout + 1" in page
    assert "`Reduction`" in page


def test_the_policy_status_schema_keeps_every_cost_term() -> None:
    """An untyped ``terms`` map was an object without properties: the API server pruned every
    term and stored ``{}``. Each term is a declared property now."""
    crd = render_all_crds()["braid.dev_offloadpolicies.yaml"]
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    item = status["properties"]["status"]["properties"]["costs"]["items"]["properties"]
    assert set(item["terms"]["properties"]) == {
        "accuracy",
        "communication",
        "localCompute",
        "hostCompute",
        "localParams",
        "hostParams",
    }
    assert set(item["stretch"]["properties"]) == {"local", "host"}
