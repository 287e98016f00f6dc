"""DIMEE through the real gateway and a real tritonserver serving the three exported tiers.

The quick profile's heads (trained once, then cached under the braid cache) are exported as
three Triton models; the gateway reads the DIMEE settings from its routing table, loads the
pools artifact and routes each sample by its nearest centroid. Each request must reach the
tier the offline router picks, and the served predictions (hence accuracy) must equal the
offline evaluation of the same samples, in every mode: in ``adaptive`` (Ours-D) the tiers'
``EXIT`` outputs come back through the gateway and move its centroids exactly as the
offline evaluation moves them.

The tiers are served as ONNX files run by onnxruntime while the offline logits come from
torch, so beside the exact equality of predictions, exits and centroids, the served logits
are checked against the offline logits of the exit each sample took (rtol=atol=1e-4: float
sums in another order; a wrong exit or a lost layer moves logits by far more).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from braid.api.catalog import PathCatalog
from braid.api.routing import DimeeRouting, Endpoints, PathWeight, RoutingTable
from braid.dimee.evaluate import Calibration, serving_calibration
from braid.dimee.export import INPUT, MODEL, OUTPUT, POOLS_FILE, export_repository, tier_path_id
from braid.dimee.train import Trained, train
from braid.policy.dimee import (
    ROUTER_MODES,
    TIERS,
    CostModel,
    PoolRouter,
    RouterMode,
    TierRouter,
    Tiers,
    confidences,
    predictions_at,
    reached_exits,
    tier_exits,
)
from braid_dev.dimee_deploy import offline_decisions
from braid_dev.stack.triton import TritonServer, start_triton

from .gateway_support import gateway_over, grpc_parameters, sample_value

pytestmark = pytest.mark.integration

SAMPLES = 96


@dataclass
class DimeeDeployment:
    trained: Trained
    calibration: Calibration
    catalog: PathCatalog
    repository: Path
    server: TritonServer


@pytest.fixture(scope="module")
def dimee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimeeDeployment]:
    trained = train("quick")
    # What `braid dimee evaluate --export` serves: the pools at Ours-D's validation point.
    cal = serving_calibration(trained, Tiers(mobile=2, edge=4, layers=6), CostModel())
    repository = tmp_path_factory.mktemp("dimee-repo")
    catalog = export_repository(trained, cal, repository)
    server = start_triton(repository, workdir=tmp_path_factory.mktemp("dimee-triton"), name="dimee")
    try:
        yield DimeeDeployment(trained, cal, catalog, repository, server)
    finally:
        server.stop()


def offline_logits(dimee: DimeeDeployment, tier_of: np.ndarray) -> np.ndarray:
    """The offline (torch) logits of the exit each of the first ``SAMPLES`` samples takes."""
    cal = dimee.calibration
    logits = dimee.trained.logits["test"][:SAMPLES]
    exit_at = tier_exits(confidences(logits), tier_of, cal.alpha, cal.tiers)
    taken: np.ndarray = logits[np.arange(SAMPLES), exit_at - 1]
    return taken


def offline(dimee: DimeeDeployment, mode: RouterMode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tier and prediction of the first ``SAMPLES`` test samples, and the final centroids, as
    ``evaluate`` computes them for the method that ``mode`` serves (one sample at a time):
    the rig's own offline reference, which the cluster e2e tests compare with too."""
    found = offline_decisions(dimee, mode, SAMPLES)
    return found.tiers, found.predictions, found.centroids


def offline_in_batches(
    dimee: DimeeDeployment, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ours-D when a request carries ``batch`` samples: all routed with the same centroids,
    the feedback after the tiers answered (a running mean does not depend on the order)."""
    cal = dimee.calibration
    test = dimee.trained.splits["test"]
    logits = dimee.trained.logits["test"][:SAMPLES]
    conf = confidences(logits)
    emb = test.embeddings[:SAMPLES]
    router = PoolRouter(cal.centroids, cal.counts, mode="adaptive", prior_count=100)
    tier_of = np.empty(SAMPLES, dtype=np.int64)
    for start in range(0, SAMPLES, batch):
        rows = slice(start, start + batch)
        tier_of[rows] = router.assign(emb[rows])
        for i in range(start, min(start + batch, SAMPLES)):
            k = int(tier_of[i])
            seen = reached_exits(conf[i : i + 1], cal.alpha, cal.tiers.depth(k))
            router.observe(k, seen, emb[i : i + 1], cal.tiers)
    exit_at = tier_exits(conf, tier_of, cal.alpha, cal.tiers)
    return tier_of, predictions_at(logits, exit_at), router.centroids


def serve(
    dimee: DimeeDeployment, mode: str, tmp_path: Path, batch: int = 1
) -> tuple[list[Any], np.ndarray, dict[str, float], np.ndarray, np.ndarray]:
    """Send the first ``SAMPLES`` test samples through the gateway in order, ``batch`` per
    request, one request at a time; the paths it reports, its predictions, the calls each
    tier model got, the router's centroids afterwards, and the logits it returned."""
    table = RoutingTable(
        model=MODEL,
        paths=[PathWeight(id=tier_path_id("full"), weight=1)],
        dimee=DimeeRouting(mode=mode, pools=str(dimee.repository / POOLS_FILE)),  # type: ignore[arg-type]
    )
    endpoints = Endpoints(
        servers={"local": dimee.server.grpc_address, "host": dimee.server.grpc_address}
    )
    ids = dimee.trained.splits["test"].ids[:SAMPLES]
    with gateway_over(dimee.catalog, endpoints, tmp_path / "routing.json", table) as (
        thread,
        registry,
    ):
        assert thread.gateway is not None
        client = grpcclient.InferenceServerClient(thread.gateway.grpc_address)
        served_paths: list[Any] = []
        served = np.empty(SAMPLES, dtype=np.int64)
        served_logits = np.empty((SAMPLES, OUTPUT.shape[0]), dtype=np.float32)
        try:
            # In order, one request at a time: Ours-D's centroids move after each answer.
            for start in range(0, SAMPLES, batch):
                rows = ids[start : start + batch]
                x = grpcclient.InferInput(INPUT.name, list(rows.shape), INPUT.datatype)
                x.set_data_from_numpy(rows)
                result = client.infer(MODEL, [x], client_timeout=60)
                served_paths.append(grpc_parameters(result)["braid_path"])
                served_logits[start : start + batch] = result.as_numpy(OUTPUT.name)
                served[start : start + batch] = served_logits[start : start + batch].argmax(axis=1)
        finally:
            client.close()
        hops = {
            tier: sample_value(
                registry,
                "braid_gateway_hop_duration_seconds_count",
                model=MODEL,
                hop=f"{MODEL}.{tier}",
                server="local" if tier == "mobile" else "host",
            )
            for tier in TIERS
        }
        router = thread.gateway.service.executor(MODEL).sample_router
        assert isinstance(router, TierRouter)
        centroids = router.pools.centroids.copy()
    return served_paths, served, hops, centroids, served_logits


@pytest.mark.parametrize("mode", ROUTER_MODES)
def test_each_sample_reaches_its_centroids_tier_and_answers_as_offline(
    dimee: DimeeDeployment, mode: RouterMode, tmp_path: Path
) -> None:
    tier_of, want, want_centroids = offline(dimee, mode)
    assert len(set(tier_of.tolist())) >= 2  # the premise: the router splits the traffic
    if mode == "adaptive":
        # The premise of checking Ours-D: its feedback changes where samples go.
        assert (tier_of != offline(dimee, "fixed")[0]).any()
    served_paths, served, hops, centroids, logits = serve(dimee, mode, tmp_path)
    assert served_paths == [tier_path_id(TIERS[k]) for k in tier_of]
    np.testing.assert_allclose(logits, offline_logits(dimee, tier_of), rtol=1e-4, atol=1e-4)
    counts = Counter(tier_of.tolist())
    assert hops == {tier: float(counts.get(k, 0)) for k, tier in enumerate(TIERS)}
    np.testing.assert_array_equal(served, want)
    labels = dimee.trained.splits["test"].labels[:SAMPLES]
    assert float((served == labels).mean()) == float((want == labels).mean())
    np.testing.assert_allclose(centroids, want_centroids, rtol=1e-9, atol=1e-9)


def test_ours_d_learns_from_every_tier_of_a_batched_request(
    dimee: DimeeDeployment, tmp_path: Path
) -> None:
    # Eight samples per request: a request spans tiers, each tier's EXIT comes back for
    # its own rows, and the centroids move by all of them before the next request.
    tier_of, want, want_centroids = offline_in_batches(dimee, 8)
    served_paths, served, hops, centroids, logits = serve(dimee, "adaptive", tmp_path, batch=8)
    np.testing.assert_allclose(logits, offline_logits(dimee, tier_of), rtol=1e-4, atol=1e-4)
    assert any("," in p for p in served_paths)  # some request was served by several tiers
    # One call per tier a request spans: each tier got the rows the offline router sends it.
    calls = Counter(k for start in range(0, SAMPLES, 8) for k in set(tier_of[start : start + 8]))
    assert hops == {tier: float(calls.get(k, 0)) for k, tier in enumerate(TIERS)}
    np.testing.assert_array_equal(served, want)
    np.testing.assert_allclose(centroids, want_centroids, rtol=1e-9, atol=1e-9)
    assert not np.allclose(centroids, dimee.calibration.centroids)
