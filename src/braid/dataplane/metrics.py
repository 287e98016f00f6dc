"""The gateway's Prometheus metrics, defined once.

The path controller reads these (through Prometheus) to estimate per-path and per-hop times
and how much traffic crosses to the host, so the names and labels are part of braid's
interface. Tests build their own ``GatewayMetrics(registry=CollectorRegistry())``; a served
gateway uses the process-wide default, created once on first use.

Buckets span 100 µs to 10 s: a hop on a loaded CPU server takes from ~0.3 ms to seconds, and
the controller compares quantiles against latency bounds in that range.
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


class GatewayMetrics:
    """Every metric of the data plane, registered on one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.request_duration = Histogram(
            "braid_gateway_request_duration_seconds",
            "End-to-end time of a request in the gateway, by the path it was routed to.",
            ["model", "path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.hop_duration = Histogram(
            "braid_gateway_hop_duration_seconds",
            "Time of one hop call (a Triton model) as the gateway sees it, network included.",
            ["model", "hop", "server"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.triton_calls = Counter(
            "braid_gateway_triton_calls_total",
            "Calls the gateway made to Triton per hop (fewer than hop passes when coalesced).",
            ["model", "hop"],
            registry=registry,
        )
        self.exits = Counter(
            "braid_gateway_exits_total",
            "Samples that left a path through an early-exit head.",
            ["model", "path", "block"],
            registry=registry,
        )
        self.samples = Counter(
            "braid_gateway_samples_total",
            "Samples served, by the path they were routed to (batch members count one each).",
            ["model", "path"],
            registry=registry,
        )
        self.bytes_crossed = Counter(
            "braid_gateway_tier_bytes_total",
            "Tensor bytes moved from one tier's server to another's (CoDE's T_cm volume).",
            ["model", "source", "target"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "braid_gateway_fallbacks_total",
            "Requests that fell back to the local original path, by why.",
            ["model", "path", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "braid_gateway_errors_total",
            "Requests that failed, by reason (the same words the error responses use).",
            ["model", "reason"],
            registry=registry,
        )
        self.routing_generation = Gauge(
            "braid_gateway_routing_generation",
            "Generation of the routing table in force.",
            ["model"],
            registry=registry,
        )
        self.path_weight = Gauge(
            "braid_gateway_path_weight",
            "Share of requests the routing table in force gives a path.",
            ["model", "path"],
            registry=registry,
        )


_default: GatewayMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> GatewayMetrics:
    """The process-wide metrics on the default registry (created once: names are global)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = GatewayMetrics()
        return _default
