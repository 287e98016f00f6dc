"""What the gateway expects a hop to take, and when a path is left (and retried) for time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from braid.dataplane.latency import LatencyModel, TimeVerdict, fall_back_for_time

PATH = "toy/cross"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slow_path(
    model: LatencyModel, clock: Clock, client_deadline_s: float | None = 30.0
) -> TimeVerdict:
    """A request with L_T = 10 ms on a path expected to take 0.5 s; the fallback 4 ms."""
    deadline = None if client_deadline_s is None else clock.now + client_deadline_s
    return model.verdict(PATH, 0.5, 0.004, clock.now + 0.010, deadline)


def test_time_fallback_only_when_the_path_misses_and_the_fallback_is_quicker() -> None:
    assert fall_back_for_time(0.010, 0.004, 0.005)
    assert not fall_back_for_time(0.004, 0.002, 0.005)  # the path fits
    assert not fall_back_for_time(0.010, 0.012, 0.005)  # the fallback would be slower still


def test_a_path_left_for_time_is_tried_again_after_the_retry_interval() -> None:
    clock = Clock()
    model = LatencyModel(retry_after_s=5.0, clock=clock)
    assert slow_path(model, clock) is TimeVerdict.LEAVE
    clock.now += 4.9
    assert slow_path(model, clock) is TimeVerdict.LEAVE
    clock.now += 0.2
    assert slow_path(model, clock) is TimeVerdict.RETRY  # one request measures it again
    assert slow_path(model, clock) is TimeVerdict.LEAVE  # and the clock starts again
    clock.now += 5.1
    assert slow_path(model, clock) is TimeVerdict.RETRY


def test_a_retry_never_risks_the_clients_deadline() -> None:
    clock = Clock()
    model = LatencyModel(retry_after_s=0.0, clock=clock)
    assert slow_path(model, clock, client_deadline_s=0.1) is TimeVerdict.LEAVE
    clock.now += 1.0
    # Due for a retry, but the 0.5 s expectation would miss the client's 0.1 s.
    assert slow_path(model, clock, client_deadline_s=0.1) is TimeVerdict.LEAVE
    assert slow_path(model, clock, client_deadline_s=None) is TimeVerdict.RETRY


def test_a_path_that_fits_goes_and_forgets_its_retry_clock() -> None:
    clock = Clock()
    model = LatencyModel(retry_after_s=5.0, clock=clock)
    assert slow_path(model, clock) is TimeVerdict.LEAVE
    assert model.verdict(PATH, 0.002, 0.004, clock.now + 0.010, None) is TimeVerdict.GO
    clock.now += 6.0
    # Left again later: a fresh wait, not a retry owed since the first time.
    assert slow_path(model, clock) is TimeVerdict.LEAVE


def test_measurements_move_the_expectation_and_a_stale_one_is_replaced() -> None:
    clock = Clock()
    model = LatencyModel(retry_after_s=5.0, clock=clock)
    model.seed("toy.b0", 0.001)
    model.seed("toy.b0", 0.5)  # a seed never overrides what is known
    assert model.expected("toy.b0") == 0.001
    model.learn("toy.b0", 0.002, done=1.0)  # the first measurement replaces the seed
    assert model.expected("toy.b0") == 0.002
    model.learn("toy.b0", 0.012, done=2.0)  # then each moves it by a fifth
    assert abs(model.expected("toy.b0") - 0.004) < 1e-12
    model.learn("toy.b0", 0.1, done=8.0)  # six seconds without a measurement: stale
    assert model.expected("toy.b0") == 0.1
    model.learn("toy.b0", 0.003, done=8.5, fresh=True)  # a retry's measurement replaces it
    assert model.expected("toy.b0") == 0.003


@dataclass(frozen=True)
class Hop:
    model: str


def test_a_segments_time_is_shared_in_fixed_proportions_whatever_was_learnt() -> None:
    """Two fused segments share blocks a and b; the longer one also runs c, d, e. A queue
    makes the short segment's calls slow: learning from shares in proportion to the learnt
    expectations inflates a and b, which then take nearly all of the long segment's time
    (c, d, e ~0, and a path through them looks free). Shares by the seeds stay put."""
    clock = Clock()
    model = LatencyModel(clock=clock)
    for name, seconds in {"a": 0.001, "b": 0.001, "c": 0.001, "d": 0.001, "e": 0.002}.items():
        model.seed(name, seconds)
    short, long = [Hop("a"), Hop("b")], [Hop(m) for m in "abcde"]
    for _ in range(50):
        for segment, elapsed in ((short, 0.200), (long, 0.060)):
            clock.now += 0.01
            for hop, share in zip(segment, model.shares(segment, elapsed), strict=True):
                model.learn(hop.model, share, clock.now)
    assert model.shares(long, 0.060) == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.02])
    # The long segment's last call was learnt in those proportions, and its hops' learnt
    # times add up to what the call took.
    assert [model.expected(m) for m in "cde"] == pytest.approx([0.01, 0.01, 0.02], rel=0.01)
    # A model seeded twice keeps its first seed (the catalog's), like its expectation.
    model.seed("e", 1.0)
    assert model.shares([Hop("d"), Hop("e")], 0.3) == pytest.approx([0.1, 0.2])
