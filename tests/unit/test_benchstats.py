"""The interval and ordering helpers every benchmark reports with (pure functions)."""

from __future__ import annotations

import pytest

from braid_dev.benchstats import LoadSampler, alternated, is_quiet, median_interval


def test_the_compared_modes_swap_order_every_repeat() -> None:
    orders = [alternated("gateway", "baseline", r) for r in range(4)]
    assert orders == [
        ("gateway", "baseline"),
        ("baseline", "gateway"),
        ("gateway", "baseline"),
        ("baseline", "gateway"),
    ]


def test_five_repeats_give_min_to_max_and_say_it_covers_less_than_95_percent() -> None:
    interval = median_interval([3.0, 1.0, 5.0, 2.0, 4.0])
    assert (interval.median, interval.low, interval.high) == (3.0, 1.0, 5.0)
    assert interval.coverage == pytest.approx(1 - 2 / 32)


def test_more_repeats_narrow_the_interval_and_keep_95_percent_coverage() -> None:
    values = [float(v) for v in range(1, 11)]  # ten repeats
    interval = median_interval(values)
    # ranks 2 and 9: 1 - 2 * P(Binomial(10, 1/2) <= 1) = 1 - 22/1024
    assert (interval.low, interval.high) == (2.0, 9.0)
    assert interval.coverage == pytest.approx(1 - 22 / 1024)
    assert interval.coverage >= 0.95


def test_the_interval_is_reported_with_its_method_and_repeats() -> None:
    summary = median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).as_dict()
    assert summary["repeats"] == 6
    assert summary["ci95_low"] == 1.0
    assert summary["ci95_high"] == 6.0
    assert "order statistics" in str(summary["interval"])


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


def test_a_busy_machine_is_marked_not_quiet() -> None:
    sampler = LoadSampler(samples=[0.2, 3.5, 0.4])
    summary = sampler.summary(cpus=2)
    assert summary["load_1min_max"] == 3.5
    assert summary["quiet"] is False
    assert LoadSampler(samples=[0.1, 0.9]).summary(cpus=2)["quiet"] is True


def test_uptime_readings_before_and_after_the_run_are_recorded() -> None:
    with LoadSampler(every_s=60.0) as sampler:
        pass
    summary = sampler.summary(cpus=2)
    assert len(summary["uptime_before_1_5_15"]) == 3
    assert len(summary["uptime_after_1_5_15"]) == 3
    assert summary["samples"] == 2


def test_quiet_means_little_cpu_went_to_others_or_to_steal() -> None:
    assert is_quiet(0.05, 0.01) is True
    assert is_quiet(0.30, 0.0) is False  # other processes used 30 % of the cores
    assert is_quiet(0.02, 0.15) is False  # the hypervisor's other guests took 15 %
    assert is_quiet(None, 0.0) is False  # not measured


def test_a_run_measures_the_cpu_others_used() -> None:
    with LoadSampler(every_s=60.0) as sampler:
        sum(i * i for i in range(200_000))  # this process's own work is not the others'
    summary = sampler.summary(cpus=2)
    assert summary["others_cpu_share"] is not None
    assert summary["others_cpu_share"] >= 0.0
    assert isinstance(summary["quiet"], bool)
