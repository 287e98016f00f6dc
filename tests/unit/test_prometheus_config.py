"""prometheus.yml rendering: static targets grouped by job, labels attached at scrape time."""

from __future__ import annotations

import pytest
import yaml

from braid.render.prometheus_config import ScrapeTarget, duration_seconds, render_prometheus_config


def test_targets_are_grouped_by_job_with_their_labels() -> None:
    text = render_prometheus_config(
        [
            ScrapeTarget("127.0.0.1:8002", "triton", {"tier": "local", "block": "b0"}),
            ScrapeTarget("127.0.0.1:9002", "triton", {"tier": "edge"}),
            ScrapeTarget("localhost:8080", "gateway", metrics_path="/gateway/metrics"),
        ],
        scrape_interval="1s",
    )
    assert yaml.safe_load(text) == {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "triton",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": ["127.0.0.1:8002"], "labels": {"block": "b0", "tier": "local"}},
                    {"targets": ["127.0.0.1:9002"], "labels": {"tier": "edge"}},
                ],
            },
            {
                "job_name": "gateway",
                "metrics_path": "/gateway/metrics",
                "static_configs": [{"targets": ["localhost:8080"]}],
            },
        ],
    }


def test_rendering_is_stable() -> None:
    targets = [ScrapeTarget("127.0.0.1:1", "a", {"z": "1", "a": "2"})]
    assert render_prometheus_config(targets) == render_prometheus_config(targets)
    assert render_prometheus_config(targets).index("a: '2'") < render_prometheus_config(
        targets
    ).index("z: '1'")


def test_explicit_timeout_evaluation_and_external_labels() -> None:
    doc = yaml.safe_load(
        render_prometheus_config(
            [],
            scrape_interval="15s",
            scrape_timeout="10s",
            evaluation_interval="30s",
            external_labels={"cluster": "dev"},
        )
    )
    assert doc["global"] == {
        "scrape_interval": "15s",
        "scrape_timeout": "10s",
        "evaluation_interval": "30s",
        "external_labels": {"cluster": "dev"},
    }
    assert doc["scrape_configs"] == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "1", "1.5s", "s", "1sec", "-1s"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="Prometheus duration"):
        duration_seconds(bad)


def test_timeout_longer_than_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        render_prometheus_config([], scrape_interval="1s", scrape_timeout="2s")


def test_one_job_cannot_mix_metrics_paths() -> None:
    with pytest.raises(ValueError, match="mixes metrics paths"):
        render_prometheus_config(
            [ScrapeTarget("h:1", "j"), ScrapeTarget("h:2", "j", metrics_path="/other")]
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "127.0.0.1"}, "host:port"),
        ({"address": "http://h:1"}, "host:port"),
        ({"job": ""}, "job"),
        ({"metrics_path": "metrics"}, "start with /"),
        ({"labels": {"bad-name": "x"}}, "label name"),
        ({"labels": {"__meta": "x"}}, "label name"),
        ({"labels": {"instance": "x"}}, "set by Prometheus"),
    ],
)
def test_bad_targets_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"address": "127.0.0.1:9090", "job": "j"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ScrapeTarget(**args)  # type: ignore[arg-type]
