"""The array form of the decision agrees with ``choose_paths`` on the path it picks."""

from __future__ import annotations

import numpy as np

from braid.api.catalog import PathCatalog
from braid.api.common import ObjectRef
from braid.api.v1alpha1.offloadpolicy import (
    CostCoefficients,
    HostRef,
    Hysteresis,
    OffloadPolicySpec,
)
from braid.policy.batch import BatchState, PathArrays, choose_paths_batch
from braid.policy.cost import Network, figures_from_entry
from braid.policy.decision import Metrics, PolicyState, TierMetrics, WeightedPath, choose_paths
from braid_dev import synthetic as syn


def test_batch_and_scalar_choose_the_same_path() -> None:
    modules, shapes = syn._modules()
    base = syn.build_catalog(modules, shapes)
    rng = np.random.default_rng(7)
    original_first = sorted(base.paths, key=lambda p: p.id != base.original_path)
    ids = [p.id for p in original_first]
    spec = OffloadPolicySpec(
        model_ref=ObjectRef(name="toy"),
        cost=CostCoefficients(c_local=1e-3, c_host=1e-3),
        latency_bound_microseconds=3000,
        all_paths=True,
        allowed_hosts=[HostRef(namespace="provider-b", model=syn.HOST)],
        hysteresis=Hysteresis(cost_margin=0.1, min_dwell_seconds=5),
    )
    for trial in range(40):
        acc = {i: float(rng.uniform(0.85, 0.9)) for i in ids}
        acc[base.original_path] = 0.9
        paths = [
            p.model_copy(update={"metrics": p.metrics.model_copy(update={"accuracy": acc[p.id]})})
            for p in original_first
        ]
        catalog = PathCatalog.model_validate(
            base.model_copy(update={"paths": paths, "baseline_accuracy": 0.9}).model_dump()
        )
        rho_l, rho_h = float(rng.uniform(0, 0.97)), float(rng.uniform(0, 0.97))
        active = int(rng.integers(0, len(ids)))
        since = float(rng.choice([0.0, 98.0]))
        metrics = Metrics(at=100.0, tiers={"local": TierMetrics(rho_l), "host": TierMetrics(rho_h)})
        state = PolicyState(active=(WeightedPath(ids[active], 1.0),), since=since, generation=1)
        scalar = choose_paths(catalog, metrics, spec, state)

        figs = [figures_from_entry(p, Network()) for p in paths]

        def col(name: str, figures: list = figs) -> np.ndarray:  # type: ignore[type-arg]
            return np.array([[getattr(f, name) for f in figures]])

        arrays = PathArrays(
            accuracy=col("accuracy"),
            t_local_us=col("t_local_us"),
            t_host_us=col("t_host_us"),
            t_comm_us=col("t_comm_us"),
            params_local_m=col("params_local_m"),
            params_host_m=col("params_host_m"),
            baseline_accuracy=np.array([0.9]),
            latency_bound_us=np.array([3000.0]),
        )
        batch = choose_paths_batch(
            arrays,
            np.array([rho_l]),
            np.array([rho_h]),
            spec.cost,
            BatchState(active=np.array([active]), since=np.array([since])),
            100.0,
            0.1,
            5.0,
        )
        assert ids[int(batch.active[0])] == scalar.primary, f"trial {trial}"
