"""Render a Prometheus configuration that scrapes a fixed list of targets.

The local stack has no service discovery (no Prometheus operator, no pods with IPs), so the
harness knows every server it started and lists them statically. A short scrape interval
lets tests and the path controller see load changes within seconds instead of the default
minute.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS_S = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)
_ADDRESS_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):\d{1,5}$")


def duration_seconds(duration: str) -> float:
    """Seconds in a Prometheus duration (``1s``, ``500ms``, ``1m30s``); rejects anything else."""
    match = _DURATION_RE.match(duration)
    if not duration or match is None:
        raise ValueError(f"{duration!r} is not a Prometheus duration (e.g. 1s, 500ms, 1m30s)")
    return sum(
        int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS_S, strict=True) if g
    )


@dataclass(frozen=True)
class ScrapeTarget:
    """One ``host:port`` to scrape, the job it belongs to and the labels it carries.

    Labels are how later queries tell servers apart (tier, block, service provider), so
    they are attached here, at scrape time, rather than relabelled in every query.
    """

    address: str
    job: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"

    def __post_init__(self) -> None:
        if not _ADDRESS_RE.match(self.address):
            raise ValueError(f"scrape target {self.address!r} must be host:port")
        if not self.job:
            raise ValueError("scrape target needs a job name")
        if not self.metrics_path.startswith("/"):
            raise ValueError(f"metrics path {self.metrics_path!r} must start with /")
        for name in self.labels:
            if not _LABEL_RE.match(name) or name.startswith("__"):
                raise ValueError(f"label name {name!r} is not a valid user label")
            if name in ("job", "instance"):
                raise ValueError(f"label {name!r} is set by Prometheus itself")


def render_prometheus_config(
    targets: Sequence[ScrapeTarget],
    *,
    scrape_interval: str = "1s",
    scrape_timeout: str | None = None,
    evaluation_interval: str | None = None,
    external_labels: Mapping[str, str] | None = None,
) -> str:
    """The YAML text of ``prometheus.yml`` with one scrape job per distinct ``job``.

    ``scrape_timeout`` defaults to the interval (Prometheus refuses a timeout longer than
    the interval, and its own default of 10 s is longer than the short intervals used here).
    """
    interval_s = duration_seconds(scrape_interval)
    timeout = scrape_timeout if scrape_timeout is not None else scrape_interval
    if duration_seconds(timeout) > interval_s:
        raise ValueError(f"scrape_timeout {timeout} exceeds scrape_interval {scrape_interval}")
    evaluation = evaluation_interval if evaluation_interval is not None else scrape_interval
    duration_seconds(evaluation)

    jobs: dict[str, list[ScrapeTarget]] = {}
    for target in targets:
        jobs.setdefault(target.job, []).append(target)
    scrape_configs: list[dict[str, object]] = []
    for job, members in jobs.items():
        paths = {t.metrics_path for t in members}
        if len(paths) > 1:
            raise ValueError(f"job {job!r} mixes metrics paths {sorted(paths)}")
        static_configs: list[dict[str, object]] = []
        for target in members:
            entry: dict[str, object] = {"targets": [target.address]}
            if target.labels:
                entry["labels"] = dict(sorted(target.labels.items()))
            static_configs.append(entry)
        scrape_configs.append(
            {"job_name": job, "metrics_path": paths.pop(), "static_configs": static_configs}
        )

    global_section: dict[str, object] = {
        "scrape_interval": scrape_interval,
        "scrape_timeout": timeout,
        "evaluation_interval": evaluation,
    }
    if external_labels:
        for name in external_labels:
            if not _LABEL_RE.match(name):
                raise ValueError(f"external label name {name!r} is not valid")
        global_section["external_labels"] = dict(sorted(external_labels.items()))
    document = {"global": global_section, "scrape_configs": scrape_configs}
    text: str = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return text


# -- Triton pods in a cluster: the labels the path controller queries ----------------------

TRITON_POD_SELECTOR = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/part-of": "braid"}
METRICS_PORT_NAME = "metrics"


def _pod_label(name: str) -> str:
    """Kubernetes service discovery's meta label for pod label ``name``."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


TRITON_POD_RELABELINGS: tuple[tuple[str, str], ...] = (
    (_pod_label("braid.dev/model"), "braid_model"),
    (_pod_label("braid.dev/block"), "braid_block"),
    (_pod_label("braid.dev/tier"), "pool_tier"),
    ("__meta_kubernetes_namespace", "namespace"),
    ("__meta_kubernetes_pod_name", "pod"),
)
"""(source meta label, target label): what every Triton series must carry for the path
controller (``braid.controller.metrics``). One definition renders both the chart's PodMonitor
and the plain ``kubernetes_sd_configs`` job, so the two cannot drift apart."""


def render_pod_monitor_relabelings() -> list[dict[str, object]]:
    """The PodMonitor's ``relabelings`` (prometheus-operator spells the fields in camelCase)."""
    return [
        {"sourceLabels": [source], "targetLabel": target, "action": "replace"}
        for source, target in TRITON_POD_RELABELINGS
    ]


def render_triton_pod_scrape_job(
    *,
    scrape_interval: str = "15s",
    namespaces: Sequence[str] = (),
    api_server: str | None = None,
    tls_config: Mapping[str, object] | None = None,
    bearer_token_file: str | None = None,
    kubeconfig_file: str | None = None,
) -> dict[str, object]:
    """A stock Prometheus's scrape job for braid's Triton pods: ``kubernetes_sd_configs``
    (role ``pod``), kept to the pods the operator renders and their ``metrics`` port, with
    the labels the controller queries relabelled from pod labels.

    ``api_server``, ``tls_config``, ``bearer_token_file`` or ``kubeconfig_file`` are for a
    Prometheus outside the cluster (the local stack's); inside, the pod's service account is
    used.
    """
    duration_seconds(scrape_interval)
    sd: dict[str, object] = {"role": "pod"}
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    if api_server is not None:
        sd["api_server"] = api_server
    if tls_config is not None:
        sd["tls_config"] = dict(tls_config)
    if bearer_token_file is not None:
        sd["authorization"] = {"credentials_file": bearer_token_file}
    if kubeconfig_file is not None:
        sd["kubeconfig_file"] = kubeconfig_file
    keep = [
        {"source_labels": [_pod_label(k)], "regex": re.escape(v), "action": "keep"}
        for k, v in sorted(TRITON_POD_SELECTOR.items())
    ]
    keep.append(
        {
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": METRICS_PORT_NAME,
            "action": "keep",
        }
    )
    relabel = [
        {"source_labels": [source], "target_label": target, "action": "replace"}
        for source, target in TRITON_POD_RELABELINGS
    ]
    return {
        "job_name": "braid-triton",
        "scrape_interval": scrape_interval,
        "kubernetes_sd_configs": [sd],
        "relabel_configs": [*keep, *relabel],
    }
