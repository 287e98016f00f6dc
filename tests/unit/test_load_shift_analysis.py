"""How the load-shift benchmark reads an episode: the switch time comes from the path that
served responses carry, not from the controller's decision (pure functions)."""

from __future__ import annotations

import pytest

from braid_dev.load_shift_analysis import Episode, Sample, summarise_episode, summarise_point

ORIGINAL = "m/original"
SKIP = "m/skip/1-3/normal"


def _episode(mode: str, heavy_paths: list[str], *, decided_at: float | None = None) -> Episode:
    """Light phase 0..10 s on the original path, heavy phase from 10 s, one request a second."""
    episode = Episode("traffic", mode, 1.0, 0, heavy_start=10.0)
    for t in range(10):
        episode.samples.append(Sample(float(t), 0.010, 8, 8, "light", True, ORIGINAL))
    for i, path in enumerate(heavy_paths):
        episode.samples.append(Sample(10.0 + i, 0.020 + 0.01 * i, 7, 8, "heavy", True, path))
    if decided_at is not None:
        episode.decisions.append((decided_at, SKIP))
    return episode


def test_the_switch_is_the_first_response_served_by_another_path() -> None:
    episode = _episode("controlled", [ORIGINAL, ORIGINAL, ORIGINAL, SKIP, SKIP], decided_at=11.5)
    summary = summarise_episode(episode)
    assert summary["light_path"] == ORIGINAL
    assert summary["switch_s"] == pytest.approx(3.0)  # traffic moved at 13 s
    assert summary["decision_switch_s"] == pytest.approx(1.5)  # decided earlier
    assert summary["heavy_served_by"] == {ORIGINAL: 3, SKIP: 2}


def test_no_served_change_means_no_switch_whatever_the_controller_decided() -> None:
    summary = summarise_episode(_episode("controlled", [ORIGINAL] * 4, decided_at=11.0))
    assert summary["switch_s"] is None


def test_a_response_served_by_falling_back_is_counted_apart_not_as_a_switch() -> None:
    """The light phase ran the skip path; under load the gateway fell back to the original
    for some requests (a hop's timeout) before the controller moved the routing."""
    episode = Episode("traffic", "controlled", 1.0, 0, heavy_start=10.0)
    for t in range(10):
        episode.samples.append(Sample(float(t), 0.010, 8, 8, "light", True, SKIP))
    heavy = [
        (SKIP, None),
        (ORIGINAL, "host_unavailable"),
        (ORIGINAL, "latency_bound"),
        (ORIGINAL, None),
    ]
    for i, (path, fallback) in enumerate(heavy):
        episode.samples.append(Sample(10.0 + i, 0.02, 7, 8, "heavy", True, path, fallback))
    summary = summarise_episode(episode)
    assert summary["switch_s"] == pytest.approx(3.0)  # the first routed move, at 13 s
    assert summary["heavy_fallbacks"] == {"host_unavailable": 1, "latency_bound": 1}
    assert summary["heavy_served_by"] == {SKIP: 1, ORIGINAL: 3}


def test_failed_requests_count_against_accuracy_and_are_reported() -> None:
    episode = _episode("fixed", [ORIGINAL, ORIGINAL])
    episode.samples.append(Sample(12.0, 10.0, 0, 8, "heavy", False, None))
    summary = summarise_episode(episode)
    assert summary["errors"] == 1
    assert summary["heavy_accuracy"] == pytest.approx(14 / 24, abs=1e-4)  # rounded to 4 places


def test_a_point_reports_ratios_over_repeats_and_how_many_switched() -> None:
    pairs = []
    for repeat in range(5):
        controlled = summarise_episode(_episode("controlled", [ORIGINAL, SKIP, SKIP]))
        fixed = summarise_episode(_episode("fixed", [ORIGINAL] * (3 + repeat)))
        pairs.append((controlled, fixed))
    point = summarise_point(pairs)
    assert point["switched"] == "5/5"
    assert point["fixed_moved"] == 0
    assert point["p50_ratio"]["repeats"] == 5
    assert point["p50_ratio"]["ci95_low"] <= point["p50_ratio"]["median"]
    assert point["p50_ratio"]["median"] <= point["p50_ratio"]["ci95_high"]
    # The fixed side's latency grows with its length here, so the controlled side is quicker.
    assert point["p99_ratio"]["median"] < 1.0
