"""The invalid-CR table: generated from the CRDs, every kind and kind of rule, one break each."""

from __future__ import annotations

from collections import Counter

from braid_dev.reliability.invalid_crs import (
    BASE,
    CEL_VARIANTS,
    DELETE,
    InvalidVariant,
    invalid_variants,
    set_path,
)


def test_the_table_covers_every_kind_and_rule() -> None:
    variants = invalid_variants()
    assert len(variants) >= 50
    assert len({v.id for v in variants}) == len(variants)
    assert {v.kind for v in variants} == set(BASE)
    rules = Counter(v.rule for v in variants)
    for rule in ("type", "required", "enum", "minimum", "maximum", "minLength", "maxLength",
                 "pattern", "minItems", "maxItems", "unknown-field"):  # fmt: skip
        assert rules[rule] > 0, rule
    assert rules["cel"] == len(CEL_VARIANTS)


def test_each_variant_breaks_exactly_its_field() -> None:
    for variant in invalid_variants():
        spec = variant.spec()
        assert spec != BASE[variant.kind], variant.id
        assert variant.field.startswith("spec"), variant.id
    assert BASE["Model"]["partition"]["blocks"][0]["name"] == "b0"  # bases are not mutated


def test_field_paths_are_written_as_the_api_server_writes_them() -> None:
    by_id = {v.id: v for v in invalid_variants()}
    name = by_id["Model:partition.blocks.0.name:pattern"]
    assert name.field == "spec.partition.blocks[0].name"
    assert name.spec()["partition"]["blocks"][0]["name"] == "Not Valid!"
    required = by_id["Block:modelRef:required"]
    assert "modelRef" not in required.spec()
    variant = InvalidVariant("Block", "replicas", 101, "spec.replicas", "maximum")
    assert variant.spec()["replicas"] == 101
    assert "tier" not in set_path(BASE["Block"], "tier", DELETE)
