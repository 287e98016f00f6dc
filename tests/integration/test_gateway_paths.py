"""What the path executor does over real Triton servers: exits, weights, reloads, fallback.

A host killed under load is `test_faults.py` (issue 10): it also restarts the host and checks
that the cross path serves again.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import CollectorRegistry

from braid.api.routing import ExitRule, PathWeight, RoutingTable, single_path_table
from braid.dataplane.executor import ExecutorOptions
from braid.dataplane.server import GatewayThread
from braid.render.segments import segment_name
from braid_dev import synthetic as syn
from braid_dev.local_runtime import LocalRuntime
from braid_dev.synthetic import SyntheticModels, exit_confidence

from .gateway_support import (
    MODEL,
    OUTPUT,
    gateway_over,
    grpc_input,
    grpc_parameters,
    inputs,
    sample_value,
    set_table,
)

ATOL = 1e-6


@pytest.fixture(scope="module")
def routing_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("routing") / "routing.json"


@pytest.fixture(scope="module")
def gateway(
    synthetic_models: SyntheticModels, local_runtime: LocalRuntime, routing_file: Path
) -> Iterator[tuple[GatewayThread, CollectorRegistry]]:
    with gateway_over(
        synthetic_models.catalog,
        local_runtime.endpoints,
        routing_file,
        single_path_table(MODEL, syn.ORIGINAL),
    ) as running:
        yield running


@pytest.fixture
def client(
    gateway: tuple[GatewayThread, CollectorRegistry],
) -> Iterator[grpcclient.InferenceServerClient]:
    assert gateway[0].gateway is not None
    c = grpcclient.InferenceServerClient(gateway[0].gateway.grpc_address)
    yield c
    c.close()


_generation = iter(range(1, 10_000))


def table(*weights: tuple[str, float], **kwargs: object) -> RoutingTable:
    return RoutingTable(
        model=MODEL,
        generation=next(_generation),
        paths=[PathWeight(id=p, weight=w) for p, w in weights],
        **kwargs,  # type: ignore[arg-type]
    )


def test_confident_samples_exit_early_and_the_rest_continue(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    client: grpcclient.InferenceServerClient,
    synthetic_models: SyntheticModels,
) -> None:
    threshold = 0.9
    set_table(
        gateway[0],
        routing_file,
        table((syn.EXIT, 1), exits=[ExitRule(block=syn.EXIT_BLOCK, confidence=threshold)]),
    )
    # The synthetic blocks are positively homogeneous: tiny inputs give near-uniform exit
    # logits, large ones peaked logits. Mix both in one batch.
    x = np.concatenate([inputs(1e-3, 3, seed=5), inputs(1e3, 3, seed=6)])[[0, 3, 1, 4, 2, 5]]
    logits = synthetic_models.run_hops(["toy.b0", "toy.b1", syn.EXIT_HEAD], x)
    confident = exit_confidence(logits) >= threshold
    assert confident.tolist() == [False, True, False, True, False, True]  # the test's premise
    registry = gateway[1]
    before = sample_value(
        registry, "braid_gateway_exits_total", model=MODEL, path=syn.EXIT, block=str(syn.EXIT_BLOCK)
    )

    result = client.infer(MODEL, [grpc_input(x)])

    params = grpc_parameters(result)
    assert params["braid_path"] == syn.EXIT
    assert params["braid_exits"] == 3
    got = result.as_numpy(OUTPUT)
    np.testing.assert_allclose(got[confident], logits[confident], rtol=1e-5, atol=ATOL)
    full = synthetic_models.run_path(syn.ORIGINAL, x)
    np.testing.assert_allclose(got[~confident], full[~confident], rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(
        got, synthetic_models.run_path(syn.EXIT, x, threshold), rtol=1e-5, atol=ATOL
    )
    after = sample_value(
        registry, "braid_gateway_exits_total", model=MODEL, path=syn.EXIT, block=str(syn.EXIT_BLOCK)
    )
    assert after - before == 3

    # All confident: the exit head's answer alone; none confident: the whole original path.
    assert grpc_parameters(client.infer(MODEL, [grpc_input(x[confident])]))["braid_exits"] == 3
    small = x[~confident]
    result = client.infer(MODEL, [grpc_input(small)])
    assert "braid_exits" not in grpc_parameters(result)
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT),
        synthetic_models.run_path(syn.ORIGINAL, small),
        rtol=1e-5,
        atol=ATOL,
    )


def test_an_exit_path_without_a_threshold_always_exits(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    client: grpcclient.InferenceServerClient,
    synthetic_models: SyntheticModels,
) -> None:
    set_table(gateway[0], routing_file, table((syn.EXIT, 1)))
    x = inputs(1e-3, 2, seed=9)
    result = client.infer(MODEL, [grpc_input(x)])
    assert grpc_parameters(result)["braid_exits"] == 2
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT), synthetic_models.run_path(syn.EXIT, x), rtol=1e-5, atol=ATOL
    )


def test_weights_are_respected_within_sampling_error(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    client: grpcclient.InferenceServerClient,
) -> None:
    """Each path's count is Binomial(N, w). The bound is 4.5 standard deviations: a correct
    gateway with a fresh random generator exceeds it for one of three paths with probability
    below 3 * 6.8e-6 = 2e-5 (this gateway's generator is seeded, so the run is reproducible)."""
    weights = {syn.ORIGINAL: 0.2, syn.SKIP: 0.5, syn.CROSS: 0.3}
    set_table(gateway[0], routing_file, table(*weights.items()))
    n = 400
    x = inputs(seed=11)
    counts = Counter(
        grpc_parameters(client.infer(MODEL, [grpc_input(x)]))["braid_path"] for _ in range(n)
    )
    assert set(counts) == set(weights)
    for path, w in weights.items():
        sigma = math.sqrt(n * w * (1 - w))
        assert abs(counts[path] - n * w) <= 4.5 * sigma, (path, counts[path], n * w, sigma)


def test_reloading_the_table_drops_no_request_in_flight(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    synthetic_models: SyntheticModels,
) -> None:
    set_table(gateway[0], routing_file, table((syn.ORIGINAL, 1)))
    assert gateway[0].gateway is not None
    address = gateway[0].gateway.grpc_address
    stop = threading.Event()
    served: list[str] = []
    failures: list[BaseException] = []
    x = inputs(seed=12)
    want = {p: synthetic_models.run_path(p, x) for p in (syn.ORIGINAL, syn.SKIP)}

    def send() -> None:
        c = grpcclient.InferenceServerClient(address)
        try:
            while not stop.is_set():
                try:
                    result = c.infer(MODEL, [grpc_input(x)], client_timeout=30)
                    path = grpc_parameters(result)["braid_path"]
                    np.testing.assert_allclose(
                        result.as_numpy(OUTPUT), want[path], rtol=1e-5, atol=ATOL
                    )
                    served.append(path)
                except BaseException as exc:
                    failures.append(exc)
        finally:
            c.close()

    senders = [threading.Thread(target=send) for _ in range(4)]
    for s in senders:
        s.start()
    try:
        for i in range(6):
            set_table(
                gateway[0], routing_file, table((syn.SKIP if i % 2 == 0 else syn.ORIGINAL, 1))
            )
            time.sleep(0.2)
        set_table(gateway[0], routing_file, table((syn.SKIP, 1)))
        settled = len(served)
        time.sleep(0.5)
    finally:
        stop.set()
        for s in senders:
            s.join(60)
    assert failures == []
    assert {syn.ORIGINAL, syn.SKIP} <= set(served)
    assert set(served[settled + 8 :]) == {syn.SKIP}  # allow for calls that started earlier


def test_an_invalid_table_is_ignored_and_the_last_good_one_kept(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    client: grpcclient.InferenceServerClient,
) -> None:
    set_table(gateway[0], routing_file, table((syn.SKIP, 1)))
    routing_file.write_text('{"model": "toy", "paths": [{"id": "toy/missing", "weight": 1}]}')
    time.sleep(0.5)  # several polls
    assert grpc_parameters(client.infer(MODEL, [grpc_input(inputs())]))["braid_path"] == syn.SKIP


def test_cross_paths_count_the_bytes_moved_between_tiers(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    client: grpcclient.InferenceServerClient,
    synthetic_models: SyntheticModels,
) -> None:
    set_table(gateway[0], routing_file, table((syn.CROSS, 1)))
    registry = gateway[1]

    def moved(source: str, target: str) -> float:
        return sample_value(
            registry, "braid_gateway_tier_bytes_total", model=MODEL, source=source, target=target
        )

    up, down = moved("local", "host"), moved("host", "local")
    x = inputs(batch=3, seed=13)
    result = client.infer(MODEL, [grpc_input(x)])
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT), synthetic_models.run_path(syn.CROSS, x), rtol=1e-5, atol=ATOL
    )
    # b0's output [4,8,8] goes up, the cross link's [8,4,4] comes back, per sample, FP32.
    assert moved("local", "host") - up == 3 * 4 * 8 * 8 * 4
    assert moved("host", "local") - down == 3 * 8 * 4 * 4 * 4
    assert (
        sample_value(
            registry,
            "braid_gateway_hop_duration_seconds_count",
            model=MODEL,
            hop=syn.XIN,
            server="host",
        )
        >= 1
    )


def test_a_path_that_would_miss_the_latency_bound_falls_back_before_the_host(
    gateway: tuple[GatewayThread, CollectorRegistry],
    routing_file: Path,
    client: grpcclient.InferenceServerClient,
    synthetic_models: SyntheticModels,
) -> None:
    # The gateway expects each hop to take what it last saw it take (a single call, when the
    # last one is older than its retry interval). Measure every hop of both paths a few times
    # first, so one slow call in an earlier test cannot make the cross path look quicker.
    for path in (syn.CROSS, syn.ORIGINAL):
        set_table(gateway[0], routing_file, table((path, 1)))
        for seed in range(5):
            client.infer(MODEL, [grpc_input(inputs(seed=100 + seed))])
    # 1 µs: no path can meet it, and the original path from b1 on is expected to be quicker
    # than the cross path's five remaining hops.
    set_table(gateway[0], routing_file, table((syn.CROSS, 1), latency_bound_us=1))
    registry = gateway[1]
    before = sample_value(
        registry,
        "braid_gateway_fallbacks_total",
        model=MODEL,
        path=syn.CROSS,
        reason="latency_bound",
    )
    calls = sample_value(
        registry,
        "braid_gateway_hop_duration_seconds_count",
        model=MODEL,
        hop=syn.XIN,
        server="host",
    )
    x = inputs(seed=14)
    result = client.infer(MODEL, [grpc_input(x)])
    params = grpc_parameters(result)
    assert params["braid_path"] == syn.ORIGINAL
    assert params["braid_routed_path"] == syn.CROSS
    assert params["braid_fallback"] == "latency_bound"
    np.testing.assert_allclose(
        result.as_numpy(OUTPUT), synthetic_models.run_path(syn.ORIGINAL, x), rtol=1e-5, atol=ATOL
    )
    assert (
        sample_value(
            registry,
            "braid_gateway_fallbacks_total",
            model=MODEL,
            path=syn.CROSS,
            reason="latency_bound",
        )
        == before + 1
    )
    # The host was never called.
    assert (
        sample_value(
            registry,
            "braid_gateway_hop_duration_seconds_count",
            model=MODEL,
            hop=syn.XIN,
            server="host",
        )
        == calls
    )


def test_concurrent_requests_share_triton_calls_and_keep_their_own_answers(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With one call per hop in flight, requests arriving meanwhile go to Triton together."""
    import asyncio

    import tritonclient.grpc.aio as grpcaio

    workdir = tmp_path_factory.mktemp("coalesce")
    with gateway_over(
        synthetic_models.catalog,
        local_runtime.endpoints,
        workdir / "routing.json",
        table((syn.ORIGINAL, 1)),
        # hop by hop, so that toy.b0 is a call of its own
        options=ExecutorOptions(max_in_flight_per_hop=1, fuse=False),
    ) as (thread, registry):
        assert thread.gateway is not None
        address = thread.gateway.grpc_address
        xs = [inputs(batch=1 + i % 3, seed=100 + i) for i in range(24)]

        async def run() -> list[np.ndarray]:
            c = grpcaio.InferenceServerClient(address)
            try:

                async def one(x: np.ndarray) -> np.ndarray:
                    tensor = grpcaio.InferInput("INPUT__0", list(x.shape), "FP32")
                    tensor.set_data_from_numpy(x)
                    return (await c.infer(MODEL, [tensor], client_timeout=60)).as_numpy(OUTPUT)

                return list(await asyncio.gather(*(one(x) for x in xs)))
            finally:
                await c.close()

        for x, got in zip(xs, asyncio.run(run()), strict=True):
            np.testing.assert_allclose(
                got, synthetic_models.run_path(syn.ORIGINAL, x), rtol=1e-5, atol=ATOL
            )
        passes = sample_value(
            registry,
            "braid_gateway_hop_duration_seconds_count",
            model=MODEL,
            hop="toy.b0",
            server="local",
        )
        calls = sample_value(
            registry, "braid_gateway_triton_calls_total", model=MODEL, hop="toy.b0"
        )
        assert passes == len(xs)
        assert 1 <= calls < passes


@pytest.mark.parametrize("fuse", [True, False])
def test_hops_in_a_row_on_one_server_are_one_ensemble_call(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
    fuse: bool,
) -> None:
    """The original path's four local blocks run as one segment: one Triton call per request
    with the same answers, and every hop is still reported (with its share of the time)."""
    hops = [h.triton_model for h in synthetic_models.catalog.path(syn.ORIGINAL).hops]
    segment = segment_name(hops)
    workdir = tmp_path_factory.mktemp(f"fuse-{fuse}")
    with gateway_over(
        synthetic_models.catalog,
        local_runtime.endpoints,
        workdir / "routing.json",
        table((syn.ORIGINAL, 1)),
        options=ExecutorOptions(fuse=fuse),
    ) as (thread, registry):
        assert thread.gateway is not None
        client = grpcclient.InferenceServerClient(thread.gateway.grpc_address)
        for seed in range(5):
            x = inputs(batch=2, seed=seed)
            got = client.infer(MODEL, [grpc_input(x)]).as_numpy(OUTPUT)
            np.testing.assert_allclose(
                got, synthetic_models.run_path(syn.ORIGINAL, x), rtol=1e-5, atol=ATOL
            )
        client.close()

        def calls(hop: str) -> float:
            return sample_value(registry, "braid_gateway_triton_calls_total", model=MODEL, hop=hop)

        assert calls(segment) == (5 if fuse else 0)
        for hop in hops:
            assert calls(hop) == (0 if fuse else 5)
            passes = sample_value(
                registry,
                "braid_gateway_hop_duration_seconds_count",
                model=MODEL,
                hop=hop,
                server="local",
            )
            assert passes == 5


def test_a_skip_path_and_an_exit_path_whose_samples_all_leave_are_one_call_each(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The skip link is fused with the blocks around it, and an exit head that ends its path
    with the blocks before it when the table sets no threshold there; with a threshold the
    gateway reads the head's logits, so the head is a call of its own."""
    catalog = synthetic_models.catalog
    skip = segment_name([h.triton_model for h in catalog.path(syn.SKIP).hops])
    whole = segment_name([h.triton_model for h in catalog.path(syn.EXIT).hops])
    before_head = segment_name(["toy.b0", "toy.b1"])
    routing_file = tmp_path_factory.mktemp("fuse-through") / "routing.json"
    with gateway_over(catalog, local_runtime.endpoints, routing_file, table((syn.SKIP, 1))) as (
        thread,
        registry,
    ):
        assert thread.gateway is not None
        client = grpcclient.InferenceServerClient(thread.gateway.grpc_address)

        def calls(hop: str) -> float:
            return sample_value(registry, "braid_gateway_triton_calls_total", model=MODEL, hop=hop)

        def infer(x: np.ndarray) -> grpcclient.InferResult:
            return client.infer(MODEL, [grpc_input(x)])

        x = inputs(batch=2, seed=21)
        np.testing.assert_allclose(
            infer(x).as_numpy(OUTPUT), synthetic_models.run_path(syn.SKIP, x), atol=ATOL
        )
        assert (calls(skip), calls(syn.SKIP_LINK)) == (1, 0)

        set_table(thread, routing_file, table((syn.EXIT, 1)))
        result = infer(x)
        assert grpc_parameters(result)["braid_exits"] == 2
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT), synthetic_models.run_path(syn.EXIT, x), atol=ATOL
        )
        assert (calls(whole), calls(syn.EXIT_HEAD), calls(before_head)) == (1, 0, 0)

        threshold = ExitRule(block=syn.EXIT_BLOCK, confidence=1e-3)  # every sample still leaves
        set_table(thread, routing_file, table((syn.EXIT, 1), exits=[threshold]))
        result = infer(x)
        assert grpc_parameters(result)["braid_exits"] == 2
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT), synthetic_models.run_path(syn.EXIT, x), atol=ATOL
        )
        assert (calls(whole), calls(syn.EXIT_HEAD), calls(before_head)) == (1, 1, 1)
        client.close()


def test_a_fallback_resumes_after_the_shared_hop_through_a_segment(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With the host's address pointing nowhere, a cross request falls back: it resumes on
    nowhere, the request resumes on the original after b0 (shared), through b1-b3's segment."""
    endpoints = local_runtime.endpoints
    dead = endpoints.model_copy(update={"servers": {**endpoints.servers, "host": "127.0.0.1:9"}})
    workdir = tmp_path_factory.mktemp("fuse-fallback")
    with gateway_over(
        synthetic_models.catalog, dead, workdir / "routing.json", table((syn.CROSS, 1))
    ) as (thread, registry):
        assert thread.gateway is not None
        client = grpcclient.InferenceServerClient(thread.gateway.grpc_address)
        x = inputs(batch=3, seed=7)
        result = client.infer(MODEL, [grpc_input(x)])
        client.close()
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT),
            synthetic_models.run_path(syn.ORIGINAL, x),
            rtol=1e-5,
            atol=ATOL,
        )
        tail = segment_name(["toy.b1", "toy.b2", "toy.b3"])
        assert (
            sample_value(registry, "braid_gateway_triton_calls_total", model=MODEL, hop=tail) == 1
        )
        assert (
            sample_value(registry, "braid_gateway_triton_calls_total", model=MODEL, hop="toy.b0")
            == 1
        )


class ByMagnitude:
    """A stand-in DIMEE router: large inputs are 'easy' (exit), small ones take the original."""

    def __init__(self) -> None:
        self.calls = 0

    def route(self, batch: np.ndarray, table: RoutingTable) -> list[str] | None:
        self.calls += 1
        if batch.shape[0] == 1:
            return None  # single samples: leave them to the table's weights
        return [syn.EXIT if float(s.max()) > 1.0 else syn.ORIGINAL for s in batch]


def test_the_sample_router_hook_sends_each_sample_its_own_way(
    synthetic_models: SyntheticModels,
    local_runtime: LocalRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    router = ByMagnitude()
    with gateway_over(
        synthetic_models.catalog,
        local_runtime.endpoints,
        tmp_path_factory.mktemp("dimee") / "routing.json",
        table((syn.SKIP, 1)),
        sample_router=router,
    ) as (thread, _registry):
        assert thread.gateway is not None
        c = grpcclient.InferenceServerClient(thread.gateway.grpc_address)
        try:
            x = np.concatenate([inputs(1e-3, 2, seed=40), inputs(1e3, 2, seed=41)])[[0, 2, 1, 3]]
            result = c.infer(MODEL, [grpc_input(x)])
            params = grpc_parameters(result)
            assert params["braid_path"] == ",".join(sorted([syn.EXIT, syn.ORIGINAL]))
            assert params["braid_exits"] == 2
            got = result.as_numpy(OUTPUT)
            big = np.array([False, True, False, True])
            np.testing.assert_allclose(
                got[big], synthetic_models.run_path(syn.EXIT, x[big]), rtol=1e-5, atol=ATOL
            )
            np.testing.assert_allclose(
                got[~big], synthetic_models.run_path(syn.ORIGINAL, x[~big]), rtol=1e-5, atol=ATOL
            )
            single = c.infer(MODEL, [grpc_input(x[:1])])
            assert grpc_parameters(single)["braid_path"] == syn.SKIP  # the router abstained
            assert router.calls == 2
        finally:
            c.close()
