"""Faults of the control plane under load (issue 10): the operator and the API server restarted.

One rig per module (``braid_dev.reliability.control_plane``): the synthetic provider pair as custom
resources in namespaces of its own, its own operator, a tritonserver per tier and the gateway
fed from the operator's routing ConfigMap, with all traffic on the cross path. While the
control plane is down the data plane must answer every request; afterwards a policy change
must reach the gateway. The operator's own crash recovery (no duplicates, all Blocks Ready) is
``test_operator_resilience``; here it is what the traffic sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from braid_dev import synthetic as syn
from braid_dev.reliability.control_plane import Rig, control_plane_rig, restart_apiserver
from braid_dev.reliability.control_plane import restart_operator as restart_operator_scenario
from braid_dev.reliability.faults import LoadSize
from braid_dev.reliability.report import RequestTally
from tests.e2e.conftest import E2ECluster

pytestmark = pytest.mark.e2e

SMALL = LoadSize(concurrency=3, before=10, during=20, after=10, wait_s=150)


@pytest.fixture(scope="module")
def rig(cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with control_plane_rig(cluster.settings, tmp_path_factory.mktemp("faults-rig")) as r:
        yield r


def _every_request_served(tally: RequestTally) -> None:
    assert tally.sent > 0
    assert tally.lost == 0, tally.notes
    assert tally.refused == 0, tally.notes  # the routing never left the servable paths
    assert tally.served == tally.sent
    assert tally.notes[f"served_by_{syn.CROSS}"] >= 1


def test_operator_killed_mid_reconcile_traffic_keeps_flowing_and_the_change_lands(
    rig: Rig,
) -> None:
    tally = restart_operator_scenario(rig, SMALL)
    _every_request_served(tally)
    assert tally.notes["served_without_operator"] >= SMALL.during
    assert tally.converged, tally.notes
    assert rig.operator.alive()


def test_apiserver_restart_traffic_keeps_flowing_and_the_operator_recovers(
    rig: Rig, cluster: E2ECluster
) -> None:
    tally = restart_apiserver(rig, cluster.settings, SMALL)
    _every_request_served(tally)
    assert tally.notes["sync_errors_while_away"] >= 1  # the API server really was away
    assert tally.converged, tally.notes
    # The rest of the session's cluster came back too.
    assert cluster.kubectl("get", "--raw", "/readyz").strip() == "ok"
