"""The gateway follows its endpoints file: a host published after it started (its Block Ready
later) gets its paths compiled and a routing table naming them applied; a host that drops
out of the file (a pod restarting) keeps its paths, so they fall back instead of being
refused. Real files, the real service and executors; nothing listens at the addresses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from braid.api.routing import Endpoints, PathWeight, RoutingTable
from braid.dataplane.routing import write_routing_table
from braid.dataplane.service import EndpointsFile, ModelSource, build_service
from braid_dev import synthetic as syn

pytestmark = pytest.mark.integration

LOCAL, HOST, OVERRIDE = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


def _write(path: Path, endpoints: Endpoints) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(endpoints.model_dump_json())
    tmp.replace(path)


async def _until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_host_published_later_is_compiled_in_and_never_dropped(tmp_path: Path) -> None:
    catalog = syn.synthetic_catalog()
    model = catalog.local_model
    endpoints_file, routing_file = tmp_path / "endpoints.json", tmp_path / "routing.json"
    first = Endpoints(servers={"local": LOCAL})
    _write(endpoints_file, first)
    # The controller's table already names the cross path, which the gateway cannot serve yet.
    write_routing_table(
        RoutingTable(model=model, generation=3, paths=[PathWeight(id=syn.CROSS, weight=1)]),
        routing_file,
    )
    overrides = Endpoints(models={"never-published": OVERRIDE})
    service = build_service(
        [
            ModelSource(
                catalog=catalog,
                endpoints=first,
                routing_file=routing_file,
                endpoints_file=EndpointsFile(endpoints_file, overrides),
            )
        ],
        routing_poll_s=0.05,
    )
    await service.start()
    try:
        assert syn.CROSS not in service.executor(model).paths
        assert service.executor(model).table.generation != 3  # refused: unknown path

        _write(endpoints_file, Endpoints(servers={"local": LOCAL, "host": HOST}))
        await _until(lambda: syn.CROSS in service.executor(model).paths)
        grown = service.executor(model)
        assert grown.endpoints.servers == {"local": LOCAL, "host": HOST}
        assert grown.endpoints.models == {"never-published": OVERRIDE}
        # The table refused before is read again and now applies.
        await _until(lambda: service.executor(model).table.generation == 3)

        # The host's Block loses its ready pod: the operator stops publishing it.
        _write(endpoints_file, Endpoints(servers={"local": LOCAL}, models={"x": LOCAL}))
        await _until(lambda: "x" in service.executor(model).endpoints.models)
        kept = service.executor(model)
        assert syn.CROSS in kept.paths
        assert kept.endpoints.servers["host"] == HOST
        assert kept.table.generation == 3
    finally:
        await service.close()
