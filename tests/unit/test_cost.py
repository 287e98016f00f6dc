"""CoDE eq. 1 and eq. 2 against hand-worked cases (units: fractions, µs, millions)."""

from __future__ import annotations

import math

import pytest

from braid.api.v1alpha1.offloadpolicy import CostCoefficients
from braid.policy.cost import (
    Load,
    Network,
    PathFigures,
    choose_path,
    comm_time_us,
    cost_terms,
    loaded_coefficients,
    path_cost,
    under_load,
)

PAPER = CostCoefficients()  # a=40, b=1e-6, c_l=1e-6, c_h=2e-5, d_l=10, d_h=10


def fig(
    pid: str,
    acc: float,
    tl: float = 0.0,
    th: float = 0.0,
    tc: float = 0.0,
    cl: float = 0.0,
    ch: float = 0.0,
) -> PathFigures:
    return PathFigures(pid, acc, tl, th, tc, cl, ch)


def test_eq1_by_hand() -> None:
    # e^{40 (0.92-0.90)} = e^0.8 = 2.225540928...; 1e-6*1000 + 1e-6*500 + 2e-5*1000
    # = 0.001 + 0.0005 + 0.02; 10*0.1 + 10*0.05 = 1.5.
    p = fig("p", 0.90, tl=500, th=1000, tc=1000, cl=0.1, ch=0.05)
    terms = cost_terms(p, 0.92, PAPER)
    assert terms["accuracy"] == pytest.approx(math.exp(0.8))
    assert terms["communication"] == pytest.approx(0.001)
    assert terms["local_compute"] == pytest.approx(0.0005)
    assert terms["host_compute"] == pytest.approx(0.02)
    assert terms["local_params"] == pytest.approx(1.0)
    assert terms["host_params"] == pytest.approx(0.5)
    assert path_cost(p, 0.92, PAPER) == pytest.approx(3.747040928, abs=1e-8)


def test_original_costs_one_plus_its_parameters() -> None:
    # A_p = L_A gives e^0 = 1: the original pays only for its own time and parameters.
    p = fig("o", 0.92, tl=1000, cl=0.2)
    assert path_cost(p, 0.92, PAPER) == pytest.approx(1 + 0.001 + 2.0)


def test_cheaper_path_within_bound_wins() -> None:
    original = fig("o", 0.92, tl=1000, cl=0.20)  # F = 1 + 0.001 + 2 = 3.001
    skip = fig("s", 0.915, tl=400, cl=0.10)  # F = e^0.2 + 0.0004 + 1 = 2.2218
    choice = choose_path([original, skip], "o", 0.92, PAPER, latency_bound_us=2000)
    assert choice.path_id == "s"
    assert choice.within_bound
    assert choice.chosen.cost == pytest.approx(math.exp(0.2) + 0.0004 + 1.0)


def test_latency_bound_excludes_the_cheapest() -> None:
    original = fig("o", 0.92, tl=1000, cl=0.20)  # 3.001, latency 1000
    fast = fig("fast", 0.91, tl=300, cl=0.12)  # e^0.4 + 0.0003 + 1.2 = 2.6921, latency 300
    slow = fig("slow", 0.92, tl=200, th=500, tc=900, cl=0.05, ch=0.05)  # 2.0111, latency 1600
    choice = choose_path([original, fast, slow], "o", 0.92, PAPER, latency_bound_us=1500)
    assert next(c.figures.path_id for c in choice.ranked) == "slow"  # cheapest overall
    assert choice.path_id == "fast"  # but 1600 µs > L_T = 1500 µs


def test_paths_not_cheaper_than_original_are_dropped_even_when_faster() -> None:
    original = fig("o", 0.92, tl=1000, cl=0.10)  # 1 + 0.001 + 1 = 2.001
    worse = fig("w", 0.80, tl=100, cl=0.01)  # e^4.8 = 121.5: far dearer, though fast
    choice = choose_path([original, worse], "o", 0.92, PAPER, latency_bound_us=5000)
    assert choice.path_id == "o"
    assert not next(c for c in choice.ranked if c.figures.path_id == "w").cheaper_than_original


def test_nothing_within_bound_falls_back_to_lowest_latency_candidate() -> None:
    original = fig("o", 0.92, tl=1000, cl=0.20)
    cheaper_but_slow = fig("s", 0.92, tl=900, cl=0.10)
    faster_but_dearer = fig("d", 0.70, tl=10, cl=0.01)
    choice = choose_path(
        [original, cheaper_but_slow, faster_but_dearer], "o", 0.92, PAPER, latency_bound_us=100
    )
    # "d" is not cheaper than the original, so it is not a candidate; of the candidates
    # {o, s} none meets 100 µs, and "s" has the lower latency.
    assert choice.path_id == "s"
    assert not choice.within_bound


def test_equal_cost_is_broken_by_latency_then_local_params_then_id() -> None:
    original = fig("o", 0.92, cl=0.5)  # 1 + 5 = 6
    # Same cost 1 + 3 = 4 (no time terms), different latencies: "slow" only by comm time,
    # which is priced at b = 0 here.
    k = PAPER.model_copy(update={"b": 0.0, "c_local": 0.0, "c_host": 0.0})
    a = fig("a", 0.92, tc=500, cl=0.3)
    b = fig("b", 0.92, tc=100, cl=0.3)
    assert choose_path([original, a, b], "o", 0.92, k, 10_000).path_id == "b"
    # Same cost and latency: fewer local parameters wins (0.1 local + 0.2 host vs 0.3 local).
    c = fig("c", 0.92, tc=100, cl=0.1, ch=0.2)
    assert choose_path([original, b, c], "o", 0.92, k, 10_000).path_id == "c"
    # Identical figures: the lexicographically smaller id, in either input order.
    d1, d2 = fig("x2", 0.92, cl=0.3), fig("x1", 0.92, cl=0.3)
    assert choose_path([original, d1, d2], "o", 0.92, k, 10_000).path_id == "x1"
    assert choose_path([original, d2, d1], "o", 0.92, k, 10_000).path_id == "x1"


def test_load_stretches_times_and_raises_prices() -> None:
    p = fig("p", 0.9, tl=100, th=200, tc=50)
    loaded = under_load(p, Load(local=0.9, host=0.5))
    assert loaded.t_local_us == pytest.approx(1000)  # 1 / (1 - 0.9) = 10
    assert loaded.t_host_us == pytest.approx(400)  # 1 / (1 - 0.5) = 2
    assert loaded.t_comm_us == 50
    assert loaded.latency_us == pytest.approx(1450)
    k = loaded_coefficients(PAPER, local_multiplier=1000)
    assert k.c_local == pytest.approx(1e-3)
    assert k.c_host == PAPER.c_host
    with pytest.raises(ValueError, match="utilisation"):
        Load(local=1.0)


def test_heavy_local_load_moves_the_choice_to_an_offloading_path() -> None:
    original = fig("o", 0.92, tl=600, cl=0.17)
    cross = fig("x", 0.905, tl=120, th=300, tc=430, cl=0.08, ch=0.05)
    paths = [original, cross]
    balanced = [under_load(p, Load(0.5, 0.5)) for p in paths]
    heavy = [under_load(p, Load(0.9, 0.5)) for p in paths]
    bound = 2 * balanced[0].latency_us  # 2400 µs
    assert choose_path(balanced, "o", 0.92, PAPER, bound).path_id == "o"
    k_heavy = loaded_coefficients(PAPER, local_multiplier=1000)
    choice = choose_path(heavy, "o", 0.92, k_heavy, bound)
    assert choice.path_id == "x"
    assert not choice.original.within_bound  # 6000 µs at 90 % local utilisation


def test_comm_time_is_rtt_plus_serialisation_per_crossing() -> None:
    net = Network(rtt_us=200, bandwidth_mbit_s=1000)
    # 12544 bytes = 100352 bits = 100.352 µs at 1 Gbit/s, plus 200 µs per crossing.
    assert comm_time_us([12544, 2304], net) == pytest.approx(200 + 100.352 + 200 + 18.432)
    assert comm_time_us([], net) == 0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="original"):
        choose_path([fig("a", 0.9)], "o", 0.9, PAPER, 1)
    with pytest.raises(ValueError, match="unique"):
        choose_path([fig("o", 0.9), fig("o", 0.9)], "o", 0.9, PAPER, 1)
