"""The operator writes a Block's status when what its pods say changes, and only then: a
rollout sends several events per pod and per Deployment, and at 1,000 Blocks unchanged
writes would be most of the operator's API traffic."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from braid.kube import operator

pytestmark = pytest.mark.unit

KEY = ("provider-a", "fmnist-head")


class StatusRecorder:
    """Stands in for the API server's status subresource: records each write."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        self.writes.append(status)


def _pod(waiting: str | None) -> dict[str, Any]:
    ready = waiting is None
    state = {"waiting": {"reason": waiting, "message": "not found"}} if waiting else {"running": {}}
    return {
        "metadata": {"name": "triton-fmnist-head-abc"},
        "spec": {"nodeName": "braid-local-0"},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [
                {"name": "triton", "image": "triton:1", "ready": ready, "state": state}
            ],
        },
    }


def _indices(pod: dict[str, Any]) -> dict[str, Any]:
    block = {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {}}
    deployment = {"metadata": {"annotations": {"braid.dev/block-generation": "1"}}}
    return {
        "blocks_index": {KEY: [block]},
        "deployments_index": {KEY: [deployment]},
        "pods_index": {KEY: [pod]},
    }


def test_a_status_is_written_once_per_change_of_what_the_pods_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = StatusRecorder()
    monkeypatch.setattr(operator, "default_kube", lambda: recorder)
    monkeypatch.setattr(operator, "_written", {})

    def event(pod: dict[str, Any]) -> None:
        asyncio.run(operator.mirror_block_status(*KEY, _indices(pod)))

    for pod in (_pod("ErrImagePull"), _pod("ErrImagePull"), _pod(None), _pod(None)):
        event(pod)
    reasons = [
        next(c["reason"] for c in w["conditions"] if c["type"] == "Ready") for w in recorder.writes
    ]
    assert reasons == ["ErrImagePull", "Available"]
    assert recorder.writes[-1]["readyReplicas"] == 1
    assert recorder.writes[-1]["observedGeneration"] == 1


class SlowFirstWrite(StatusRecorder):
    """The first write takes a while to land (a slow API server round trip)."""

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        if not self.writes and not getattr(self, "slowed", False):
            self.slowed = True
            time.sleep(0.3)
        super().patch_status(api_version, kind, name, namespace, status)


def test_the_last_status_written_is_what_the_pods_say_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two events of one Block (its pod's and its Deployment's) handled at once: the one that
    saw the pods later must not be overwritten by the other's slower write."""
    recorder = SlowFirstWrite()
    monkeypatch.setattr(operator, "default_kube", lambda: recorder)
    monkeypatch.setattr(operator, "_written", {})
    starting = _pod("ContainerCreating")
    indices = _indices(starting)

    async def two_events() -> None:
        first = asyncio.create_task(operator.mirror_block_status(*KEY, indices))
        await asyncio.sleep(0.05)  # the first is writing "Progressing"
        indices["pods_index"] = {KEY: [_pod("ErrImagePull")]}
        await operator.mirror_block_status(*KEY, indices)
        await first

    asyncio.run(two_events())
    reasons = [
        next(c["reason"] for c in w["conditions"] if c["type"] == "Ready") for w in recorder.writes
    ]
    assert reasons[-1] == "ErrImagePull"
