"""PromQL that turns Triton's and the gateway's metrics into the decision's ``Metrics``.

Triton servers are scraped with a ``tier`` label (``local`` / ``host``; set at scrape time by
the harness's static targets, or relabelled from the Services' annotations in a cluster), so
one query per quantity covers every server. ``irate`` over a short window follows the last
two scrapes: the controller should see a load step one scrape after it happens, and the
decision's hysteresis, not a long averaging window, keeps it from reacting to noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from braid.dataplane.promql import PrometheusClient, PrometheusQueryError, PromSample
from braid.logs import log_event
from braid.policy.cost import Network
from braid.policy.decision import Metrics, TierMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricQueries:
    """The PromQL the controller runs, with the selectors of one deployment."""

    model: str
    window: str = "3s"
    triton_selector: str = 'tier!=""'

    def _rate(self, metric: str, by: str) -> str:
        return f"sum by ({by}) (irate({metric}{{{self.triton_selector}}}[{self.window}]))"

    @property
    def tiers_up(self) -> str:
        return f"max by (tier) (up{{{self.triton_selector}}})"

    @property
    def compute_us_per_s(self) -> str:
        return self._rate("nv_inference_compute_infer_duration_us", "tier, model")

    @property
    def inferences_per_s(self) -> str:
        return self._rate("nv_inference_count", "tier, model")

    @property
    def executions_per_s(self) -> str:
        return self._rate("nv_inference_exec_count", "tier, model")

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
        return self._rate("nv_inference_queue_duration_us", "tier")

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
