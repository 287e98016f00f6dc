"""PromQL that turns Triton's and the gateway's metrics into the decision's ``Metrics``.

The contract with Prometheus: every Triton series carries ``braid_model`` (the Model its
pod serves, from the pod label ``braid.dev/model``) and ``namespace``; the chart's PodMonitor
and its plain ``kubernetes_sd_configs`` job both relabel them from pod labels
(``braid.render.prometheus_config.TRITON_POD_RELABELINGS``), and the local stack's static
targets carry the same labels. Which server is "local" and which "host" depends on the
policy (one provider's model is another's host), so the queries select each role by model
and namespace and name it in a ``tier`` label with ``label_replace``: the decision reads
``tier`` = ``local`` / ``host`` whatever the cluster's pools are called.

``irate`` follows the last two scrapes in its window; the window must hold at least two of
them, so it follows the scrape interval (``rate_window``): 4 intervals, which tolerates a
missed scrape. The decision's hysteresis, not a long averaging window, keeps it from
reacting to noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from braid.api.catalog import PathCatalog
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.dataplane.promql import PrometheusClient, PrometheusQueryError, PromSample
from braid.logs import log_event
from braid.policy.cost import Network
from braid.policy.decision import Metrics, TierMetrics

logger = logging.getLogger(__name__)


MODEL_LABEL = "braid_model"
NAMESPACE_LABEL = "namespace"
ROLE_LABEL = "tier"
WINDOW_SCRAPES = 4


def rate_window(scrape_interval_s: float) -> str:
    """The irate window for a scrape interval: ``WINDOW_SCRAPES`` scrapes, whole seconds."""
    if scrape_interval_s <= 0:
        raise ValueError(f"scrape interval must be > 0 s, got {scrape_interval_s}")
    return f"{max(math.ceil(WINDOW_SCRAPES * scrape_interval_s), 1)}s"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def role_selectors(
    catalog: PathCatalog, namespaces: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The label selector of each server role: the local model's pods, and the host models'.

    ``namespaces`` (model -> namespace, from the policy's allowed hosts and its own
    namespace) narrows each role to its providers' namespaces in a cluster, where two
    tenants may name their models alike; a role with a model of unknown namespace is
    selected by model name alone.
    """
    roles = {
        "local": [catalog.local_model],
        "host": sorted(m.name for m in catalog.models if m.role == "host"),
    }
    out: dict[str, str] = {}
    for role, models in roles.items():
        if not models:
            continue
        selector = f'{MODEL_LABEL}=~"{"|".join(_quote(m) for m in models)}"'
        known = namespaces or {}
        if all(m in known for m in models):
            spaces = sorted({known[m] for m in models})
            selector += f',{NAMESPACE_LABEL}=~"{"|".join(_quote(n) for n in spaces)}"'
        out[role] = selector
    return out


def model_namespaces(
    catalog: PathCatalog, spec: OffloadPolicySpec, namespace: str
) -> dict[str, str]:
    """Where each model of the catalog is served in a cluster: the local model in the
    policy's namespace, a host model in the namespace its allowed-host entry names (an
    entry without a model covers the catalog's remaining hosts when it is the only one)."""
    out = {catalog.local_model: namespace}
    for host in spec.allowed_hosts:
        if host.model:
            out[host.model] = host.namespace
    open_entries = [h.namespace for h in spec.allowed_hosts if not h.model]
    if len(open_entries) == 1:
        for model in catalog.models:
            if model.role == "host":
                out.setdefault(model.name, open_entries[0])
    return out


@dataclass(frozen=True)
class MetricQueries:
    """The PromQL the controller runs, with the selectors of one deployment."""

    model: str
    window: str = "3s"
    roles: Mapping[str, str] = field(
        default_factory=lambda: {"local": f'{ROLE_LABEL}="local"', "host": f'{ROLE_LABEL}="host"'}
    )
    """Role (``local`` / ``host``) -> label selector of its Triton series. The default reads
    targets that already carry the role as ``tier`` (a fixed pair of servers); a cluster's
    come from ``for_catalog``."""

    @classmethod
    def for_catalog(
        cls, catalog: PathCatalog, window: str, namespaces: Mapping[str, str] | None = None
    ) -> MetricQueries:
        return cls(
            model=catalog.local_model, window=window, roles=role_selectors(catalog, namespaces)
        )

    def _by_role(self, inner: Callable[[str], str]) -> str:
        """One vector per role, each named by a ``tier`` label, joined with ``or``."""
        return " or ".join(
            f'label_replace({inner(selector)}, "{ROLE_LABEL}", "{role}", "", "")'
            for role, selector in sorted(self.roles.items())
        )

    def _rate(self, metric: str, by: str) -> str:
        keep = f" by ({by})" if by else ""
        return self._by_role(lambda sel: f"sum{keep} (irate({metric}{{{sel}}}[{self.window}]))")

    @property
    def tiers_up(self) -> str:
        return self._by_role(lambda sel: f"max(up{{{sel}}})")

    @property
    def compute_us_per_s(self) -> str:
        return self._rate("nv_inference_compute_infer_duration_us", "model")

    @property
    def inferences_per_s(self) -> str:
        return self._rate("nv_inference_count", "model")

    @property
    def executions_per_s(self) -> str:
        return self._rate("nv_inference_exec_count", "model")

    def _hop_rate(self, suffix: str) -> str:
        return (
            f"sum by (hop) (irate(braid_gateway_hop_duration_seconds_{suffix}"
            f'{{model="{self.model}"}}[{self.window}]))'
        )

    @property
    def hop_seconds_per_s(self) -> str:
        return self._hop_rate("sum")

    @property
    def hop_calls_per_s(self) -> str:
        return self._hop_rate("count")

    @property
    def queue_us_per_s(self) -> str:
        return self._rate("nv_inference_queue_duration_us", "")

    @property
    def path_rps(self) -> str:
        return (
            f'sum by (path) (irate(braid_gateway_samples_total{{model="{self.model}"}}'
            f"[{self.window}]))"
        )


def _finite(samples: list[PromSample]) -> list[PromSample]:
    return [s for s in samples if math.isfinite(s.value)]


def metrics_from_samples(
    at: float,
    up: list[PromSample],
    compute: list[PromSample],
    count: list[PromSample],
    paths: list[PromSample],
    network: Network,
    executions: list[PromSample] | None = None,
    hop_seconds: list[PromSample] | None = None,
    hop_calls: list[PromSample] | None = None,
) -> Metrics:
    """The decision's view of the samples: pure, so tests feed samples without Prometheus.

    A tier is measured when its servers are up; its busy time is the sum over its models.
    With ``executions`` (batched executions per second), each model's own utilisation and
    mean execution time are reported too, for the per-hop queueing model; with the gateway's
    ``hop_seconds`` and ``hop_calls`` rates, the mean time of its calls to each model.
    """
    calls = {s.labels.get("hop", ""): s.value for s in _finite(hop_calls or [])}
    hop_us = {
        s.labels.get("hop", ""): 1e6 * s.value / calls[s.labels.get("hop", "")]
        for s in _finite(hop_seconds or [])
        if calls.get(s.labels.get("hop", ""), 0.0) > 0
    }
    tiers_up = {s.labels.get("tier", "") for s in up if s.value >= 1} - {""}
    busy: dict[str, float] = {t: 0.0 for t in tiers_up}
    per_model: dict[str, dict[str, float]] = {t: {} for t in tiers_up}
    model_busy: dict[str, dict[str, float]] = {t: {} for t in tiers_up}
    exec_us: dict[str, dict[str, float]] = {t: {} for t in tiers_up}
    counts = {(s.labels.get("tier"), s.labels.get("model")): s.value for s in _finite(count)}
    execs = {
        (s.labels.get("tier"), s.labels.get("model")): s.value for s in _finite(executions or [])
    }
    for s in _finite(compute):
        tier, model = s.labels.get("tier", ""), s.labels.get("model", "")
        if tier not in tiers_up:
            continue
        busy[tier] += s.value / 1e6
        n = counts.get((tier, model), 0.0)
        if n > 0:
            per_model[tier][model] = s.value / n
        if executions is not None:
            model_busy[tier][model] = s.value / 1e6
            e = execs.get((tier, model), 0.0)
            if e > 0:
                exec_us[tier][model] = s.value / e
    return Metrics(
        at=at,
        tiers={
            t: TierMetrics(
                busy=busy[t],
                compute_us=per_model[t],
                model_busy=model_busy[t],
                exec_us=exec_us[t],
            )
            for t in tiers_up
        },
        path_rps={s.labels.get("path", ""): s.value for s in _finite(paths) if s.value > 0},
        network=network,
        hop_us=hop_us,
    )


def gather_metrics(
    prometheus: PrometheusClient,
    queries: MetricQueries,
    at: float,
    network: Network | None = None,
) -> Metrics | None:
    """Query Prometheus once; ``None`` when it cannot be read (the decision keeps its last)."""
    try:
        up = prometheus.query(queries.tiers_up)
        compute = prometheus.query(queries.compute_us_per_s)
        count = prometheus.query(queries.inferences_per_s)
        paths = prometheus.query(queries.path_rps)
        executions = prometheus.query(queries.executions_per_s)
        hop_seconds = prometheus.query(queries.hop_seconds_per_s)
        hop_calls = prometheus.query(queries.hop_calls_per_s)
    except (httpx.HTTPError, PrometheusQueryError) as exc:
        log_event(logger, "controller.metrics_unavailable", logging.WARNING, error=str(exc))
        return None
    return metrics_from_samples(
        at,
        up,
        compute,
        count,
        paths,
        network or Network(),
        executions=executions,
        hop_seconds=hop_seconds,
        hop_calls=hop_calls,
    )


def describe(metrics: Metrics) -> Mapping[str, float]:
    """A flat summary for one log line."""
    out = {f"busy_{t}": round(m.busy, 3) for t, m in metrics.tiers.items()}
    out["offered_rps"] = round(metrics.offered_rps, 1)
    return out
