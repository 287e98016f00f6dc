"""The demo's policy: the sample with the machine's two figures, nothing else changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid_dev.demo.manifests import DEMO_C_LOCAL, DEMO_LATENCY_BOUND_US, demo_policy

pytestmark = pytest.mark.unit
SAMPLES = Path(__file__).resolve().parents[2] / "crds" / "samples"


def test_only_the_bound_and_the_local_price_change() -> None:
    sample = next(
        doc
        for f in sorted(SAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(f.read_text())
        if doc and doc["kind"] == "OffloadPolicy"
    )
    adapted = demo_policy(sample)
    spec = OffloadPolicySpec.model_validate(adapted["spec"])  # still a valid spec
    assert spec.latency_bound_microseconds == DEMO_LATENCY_BOUND_US
    assert spec.cost.c_local == DEMO_C_LOCAL
    before, after = dict(sample["spec"]), dict(adapted["spec"])
    for spec_ in (before, after):
        spec_.pop("latencyBoundMicroseconds")
        spec_["cost"] = {k: v for k, v in spec_["cost"].items() if k != "cLocal"}
    assert before == after
    assert sample["spec"]["latencyBoundMicroseconds"] != DEMO_LATENCY_BOUND_US  # not mutated
