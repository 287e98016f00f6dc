"""Invalid custom resources are refused by the API server, with a message naming the field.

Schema types, enums, ranges and CEL rules do the refusing, so `kubectl apply` fails at once
instead of the operator discovering the problem later. The variants (some 300: every bound,
enum, pattern, length, item count, type and required field of the CRDs, unknown fields, and a
table for the CEL rules) are ``braid_dev.reliability.invalid_crs``'s, which
``bench/reliability.py`` tallies into results/reliability.json.
"""

from __future__ import annotations

import pytest
import yaml

from braid_dev.reliability.invalid_crs import (
    BASE,
    check_invalid_crs,
    tally_outcomes,
)
from tests.e2e.conftest import E2ECluster


def _doc(kind: str, namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "x", "namespace": namespace},
            "spec": BASE[kind],
        }
    )


@pytest.mark.parametrize("kind", sorted(BASE))
def test_the_valid_base_is_accepted_by_kubectl(crds: E2ECluster, namespace: str, kind: str) -> None:
    result = crds.access.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-",
        input=_doc(kind, namespace), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_every_invalid_variant_is_refused_naming_the_field(
    crds: E2ECluster, namespace: str
) -> None:
    outcomes = check_invalid_crs(crds.access, namespace)
    admitted = [o.variant.id for o in outcomes if o.admitted]
    unnamed = [
        f"{o.variant.id}: wanted {o.variant.field!r} in {o.message[:300]!r}"
        for o in outcomes
        if not o.admitted and not o.names_field
    ]
    assert admitted == []
    assert unnamed == []
    tally = tally_outcomes(outcomes)
    assert tally.tried >= 50
    assert (tally.admitted, tally.without_field_in_message) == (0, 0)


def test_kubectl_names_the_field_too(crds: E2ECluster, namespace: str) -> None:
    """What a person sees: kubectl apply refuses a bad value and says where it is."""
    doc = yaml.safe_load(_doc("Block", namespace))
    doc["spec"]["replicas"] = 101
    result = crds.access.kubectl(
        "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert result.returncode != 0
    assert "spec.replicas" in result.stderr
