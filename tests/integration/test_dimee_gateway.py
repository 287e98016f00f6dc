"""DIMEE through the real gateway and a real tritonserver serving the three exported tiers.

The quick profile's heads (trained once, then cached under the braid cache) are exported as
three Triton models; the gateway reads the DIMEE settings from its routing table, loads the
pools artifact and routes each sample by its nearest centroid. Each request must reach the
tier the offline router picks, and the served predictions (hence accuracy) must equal the
offline evaluation of the same samples.
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
from braid.devstack.triton import TritonServer, start_triton
from braid.dimee.evaluate import Calibration, calibrate
from braid.dimee.export import INPUT, MODEL, OUTPUT, POOLS_FILE, export_repository, tier_path_id
from braid.dimee.train import Trained, train
from braid.policy.dimee import (
    TIERS,
    CostModel,
    PoolRouter,
    Tiers,
    confidences,
    predictions_at,
    tier_exits,
)

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
    cal = calibrate(trained, Tiers(mobile=2, edge=4, layers=6), CostModel())
    repository = tmp_path_factory.mktemp("dimee-repo")
    catalog = export_repository(trained, cal, repository)
    server = start_triton(repository, workdir=tmp_path_factory.mktemp("dimee-triton"), name="dimee")
    try:
        yield DimeeDeployment(trained, cal, catalog, repository, server)
    finally:
        server.stop()


def offline(dimee: DimeeDeployment, adaptive: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tier and prediction of the first ``SAMPLES`` test samples, as ``evaluate`` computes them."""
    cal = dimee.calibration
    test = dimee.trained.splits["test"]
    logits = dimee.trained.logits["test"][:SAMPLES]
    router = PoolRouter(cal.centroids, cal.counts, adaptive=adaptive, prior_count=100)
    tier_of = router.assign(test.embeddings[:SAMPLES])
    exit_at = tier_exits(confidences(logits), tier_of, cal.alpha, cal.tiers)
    return tier_of, predictions_at(logits, exit_at)


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_each_sample_reaches_its_centroids_tier_and_answers_as_offline(
    dimee: DimeeDeployment, mode: str, tmp_path: Path
) -> None:
    tier_of, want = offline(dimee, adaptive=mode == "adaptive")
    assert len(set(tier_of.tolist())) >= 2  # the premise: the router splits the traffic
    table = RoutingTable(
        model=MODEL,
        paths=[PathWeight(id=tier_path_id("full"), weight=1)],
        dimee=DimeeRouting(mode=mode, pools=str(dimee.repository / POOLS_FILE)),  # type: ignore[arg-type]
    )
    endpoints = Endpoints(
        servers={"local": dimee.server.grpc_address, "host": dimee.server.grpc_address}
    )
    test = dimee.trained.splits["test"]
    ids = test.ids[:SAMPLES]
    with gateway_over(dimee.catalog, endpoints, tmp_path / "routing.json", table) as (
        thread,
        registry,
    ):
        assert thread.gateway is not None
        client = grpcclient.InferenceServerClient(thread.gateway.grpc_address)
        served_paths: list[Any] = []
        served = np.empty(SAMPLES, dtype=np.int64)
        try:
            # One sample per request, in order: Ours-D's centroids move after each sample.
            for i in range(SAMPLES):
                x = grpcclient.InferInput(INPUT.name, [1, *INPUT.shape], INPUT.datatype)
                x.set_data_from_numpy(ids[i : i + 1])
                result = client.infer(MODEL, [x], client_timeout=60)
                served_paths.append(grpc_parameters(result)["braid_path"])
                served[i] = int(result.as_numpy(OUTPUT.name)[0].argmax())
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
    assert served_paths == [tier_path_id(TIERS[k]) for k in tier_of]
    counts = Counter(tier_of.tolist())
    assert hops == {tier: float(counts.get(k, 0)) for k, tier in enumerate(TIERS)}
    np.testing.assert_array_equal(served, want)
    labels = test.labels[:SAMPLES]
    assert float((served == labels).mean()) == float((want == labels).mean())
