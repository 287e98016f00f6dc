"""The metrics contract between Prometheus and the path controller: the labels the chart
relabels from pod labels are the labels the controller's queries select by, and its rate
windows follow the scrape interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.controller.metrics import (
    MODEL_LABEL,
    NAMESPACE_LABEL,
    MetricQueries,
    model_namespaces,
    rate_window,
    role_selectors,
)
from braid.render.prometheus_config import (
    TRITON_POD_RELABELINGS,
    render_pod_monitor_relabelings,
    render_triton_pod_scrape_job,
)
from braid.tooling.manifests import monitoring_documents
from braid_dev import synthetic as syn

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "braid" / "files" / "monitoring"

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("interval", "window"), [(1.0, "4s"), (15.0, "60s"), (0.5, "2s"), (30, "120s")]
)
def test_the_window_holds_four_scrapes(interval: float, window: str) -> None:
    assert rate_window(interval) == window


def test_a_window_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="scrape interval"):
        rate_window(0)


def test_every_label_the_controller_selects_by_is_relabelled_from_pod_labels() -> None:
    relabelled = {target for _, target in TRITON_POD_RELABELINGS}
    assert {MODEL_LABEL, NAMESPACE_LABEL} <= relabelled
    monitor = render_pod_monitor_relabelings()
    assert {r["targetLabel"] for r in monitor} == relabelled
    job = render_triton_pod_scrape_job(scrape_interval="15s")
    targets = {r.get("target_label") for r in job["relabel_configs"]}  # type: ignore[union-attr]
    assert relabelled <= targets


def test_roles_select_by_model_and_namespace_in_a_cluster() -> None:
    catalog = syn.synthetic_catalog()
    spec = OffloadPolicySpec.model_validate(
        {
            "modelRef": {"name": syn.LOCAL},
            "latencyBoundMicroseconds": 100_000,
            "allowedHosts": [{"namespace": "provider-b"}],
        }
    )
    spaces = model_namespaces(catalog, spec, "provider-a")
    assert spaces == {syn.LOCAL: "provider-a", syn.HOST: "provider-b"}
    roles = role_selectors(catalog, spaces)
    assert roles["local"] == f'{MODEL_LABEL}=~"{syn.LOCAL}",{NAMESPACE_LABEL}=~"provider-a"'
    assert roles["host"] == f'{MODEL_LABEL}=~"{syn.HOST}",{NAMESPACE_LABEL}=~"provider-b"'


def test_without_namespaces_the_model_name_selects() -> None:
    roles = role_selectors(syn.synthetic_catalog())
    assert roles == {
        "local": f'{MODEL_LABEL}=~"{syn.LOCAL}"',
        "host": f'{MODEL_LABEL}=~"{syn.HOST}"',
    }


def test_queries_name_each_role_in_the_tier_label_the_decision_reads() -> None:
    q = MetricQueries.for_catalog(syn.synthetic_catalog(), "60s")
    compute = q.compute_us_per_s
    assert compute.count("label_replace(") == 2
    assert '"tier", "local"' in compute
    assert '"tier", "host"' in compute
    assert "[60s]" in compute
    assert f'{MODEL_LABEL}=~"{syn.HOST}"' in q.tiers_up


@pytest.mark.parametrize("name", sorted(monitoring_documents()))
def test_the_charts_prometheus_files_match_the_generator(name: str) -> None:
    committed = (CHART_FILES / name).read_text()
    assert committed == monitoring_documents()[name], f"{name} is stale: run `make manifests`"
