"""The hand-written hostile cases against what can judge them without a cluster.

The schema's static part (types, patterns, lengths, enums, bounds) is checked with a JSON
Schema validator over the generated CRDs; the webhook's cases with the pure admission checks
(``braid.render.admission``) in the cases' world of two providers. The CEL rules need the
API server: ``tests/e2e/test_admission.py`` sends every case there.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jsonschema
import pytest

from braid.api.v1alpha1 import KINDS
from braid.api.v1alpha1.block import BlockSpec
from braid.api.v1alpha1.link import LinkSpec
from braid.api.v1alpha1.model import ModelSpec
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.render.admission import (
    AdmissionConfig,
    block_problems,
    link_problems,
    model_problems,
    policy_problems,
)
from braid.render.crds import render_all_crds
from braid_dev.reliability.hostile_crs import CASES, IMAGE_PREFIXES, VALID, WORLD, HostileCase

LOCAL_NS, HOST_NS = "tenant-a", "tenant-b"
CONFIG = AdmissionConfig(allow_local_paths=False, image_prefixes=IMAGE_PREFIXES)
SPECS: dict[str, Any] = {
    "Model": ModelSpec,
    "Block": BlockSpec,
    "Link": LinkSpec,
    "OffloadPolicy": OffloadPolicySpec,
}


def _namespace(placeholder: str) -> str:
    return {"<local>": LOCAL_NS, "<host>": HOST_NS}[placeholder]


def _world() -> tuple[dict[tuple[str, str], ModelSpec], dict[tuple[str, str], str]]:
    models, blocks = {}, {}
    for kind, ns, name, spec in WORLD:
        resolved = HostileCase("w", "w", kind, ns, name, spec, "").resolved(LOCAL_NS, HOST_NS)
        if kind == "Model":
            models[(_namespace(ns), name)] = ModelSpec.model_validate(resolved)
        else:
            blocks[(_namespace(ns), name)] = resolved["modelRef"]["name"]
    return models, blocks


def webhook_problems(kind: str, namespace: str, name: str, body: dict[str, Any]) -> list[str]:
    """What the webhook answers for one object in the world (``braid.kube.webhook``'s logic
    with the world in memory instead of the API server)."""
    models, blocks = _world()
    spec = SPECS[kind].model_validate(body)
    if kind == "Model":
        return model_problems(spec, CONFIG)
    if kind == "Block":
        ref = spec.model_ref
        return block_problems(
            namespace, spec, models.get((ref.namespace or namespace, ref.name)), CONFIG
        )
    if kind == "Link":
        own = [(n, m) for (ns, n), m in models.items() if ns == namespace]
        served = blocks.get((namespace, spec.served_by.name)) if spec.served_by else None
        return link_problems(
            name, namespace, spec, lambda ns, n: models.get((ns, n)), own, served, CONFIG
        )
    ref = spec.model_ref
    return policy_problems(namespace, spec, models.get((ref.namespace or namespace, ref.name)))


def _spec_schema(kind: str) -> dict[str, Any]:
    info = next(i for i in KINDS if i.kind == kind)
    crd = render_all_crds()[f"braid.dev_{info.plural}.yaml"]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


def static_refusals(kind: str, spec: dict[str, Any]) -> list[str]:
    """``path: message`` of every static-schema error (no CEL, no list-map keys)."""
    validator = jsonschema.Draft4Validator(_spec_schema(kind))
    out = []
    for error in validator.iter_errors(spec):
        path = "spec" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        out.append(f"{path}: {error.message}")
    return out


def test_at_least_sixty_distinct_cases_across_every_class() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 60
    classes = Counter(c.klass for c in CASES)
    assert set(classes) == {"uri", "reference", "consent", "name", "value"}
    assert min(classes.values()) >= 6
    assert {c.kind for c in CASES} == set(SPECS)
    assert all(c.expect for c in CASES)


@pytest.mark.parametrize(("kind", "ns", "name", "spec"), WORLD + VALID, ids=lambda v: str(v)[:40])
def test_the_world_and_the_valid_objects_pass_every_check(
    kind: str, ns: str, name: str, spec: dict[str, Any]
) -> None:
    body = HostileCase("v", "v", kind, ns, name, spec, "").resolved(LOCAL_NS, HOST_NS)
    assert static_refusals(kind, body) == []
    assert webhook_problems(kind, _namespace(ns), name, body) == []


WEBHOOK_CASES = [c for c in CASES if c.layer == "webhook"]


@pytest.mark.parametrize("case", WEBHOOK_CASES, ids=lambda c: c.id)
def test_the_webhook_refuses_naming_the_field(case: HostileCase) -> None:
    body = case.resolved(LOCAL_NS, HOST_NS)
    assert static_refusals(case.kind, body) == []  # only the webhook can refuse it
    problems = webhook_problems(case.kind, _namespace(case.namespace), case.name, body)
    assert problems, case.id
    assert any(case.expect in p for p in problems), problems


def test_file_uris_are_admitted_where_local_paths_are_allowed() -> None:
    case = next(c for c in CASES if c.id == "block-hostpath-etc")
    spec = BlockSpec.model_validate(case.resolved(LOCAL_NS, HOST_NS))
    local = AdmissionConfig(allow_local_paths=True, image_prefixes=IMAGE_PREFIXES)
    assert block_problems(LOCAL_NS, spec, None, local) == []
    assert block_problems(LOCAL_NS, spec, None, CONFIG) != []


STATIC = [
    c
    for c in CASES
    if c.layer == "schema" and static_refusals(c.kind, c.resolved(LOCAL_NS, HOST_NS))
]


def test_most_schema_cases_are_refused_by_the_static_schema_alone() -> None:
    """The rest are CEL rules (names, cross-field rules) and list-map keys: e2e tier."""
    assert len(STATIC) >= 20


@pytest.mark.parametrize("case", STATIC, ids=lambda c: c.id)
def test_the_static_schema_names_the_field(case: HostileCase) -> None:
    errors = static_refusals(case.kind, case.resolved(LOCAL_NS, HOST_NS))
    assert any(case.expect in e for e in errors), errors


def test_every_cel_message_expression_is_a_closed_string() -> None:
    """An apostrophe inside a CEL string literal breaks the rule at CRD install time."""
    rules: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            rules.extend(node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(render_all_crds())
    assert len(rules) >= 20
    for rule in rules:
        text = rule.get("messageExpression", "").replace("\\'", "")
        assert text.count("'") % 2 == 0, text
