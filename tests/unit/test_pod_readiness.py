"""A Block's Ready condition from its pods: the status dicts are shaped as the kubelet and the
scheduler write them (taken from ``kubectl get pod -o json`` of such pods)."""

from __future__ import annotations

from typing import Any

import pytest

from braid.render.pod_readiness import block_readiness, pod_problem

pytestmark = pytest.mark.unit

IMAGE = "ghcr.io/braid-dev/braid-triton:0.1.0"
NODE = "braid-local-0"


def _pod(
    name: str = "triton-b-5d9c7f-abcde",
    *,
    phase: str = "Pending",
    conditions: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    node: str | None = NODE,
    **status: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"braid.dev/block": "b"}},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions or [], **status},
    }
    if containers is not None:
        body["status"]["containerStatuses"] = containers
    if init is not None:
        body["status"]["initContainerStatuses"] = init
    return body


def _cond(type_: str, status: str, reason: str | None = None, message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": type_,
        "status": status,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    if reason:
        out["reason"], out["message"] = reason, message
    return out


SCHEDULED = _cond("PodScheduled", "True")


def _triton(
    state: dict[str, Any], *, ready: bool = False, restarts: int = 0, **more: Any
) -> dict[str, Any]:
    return {
        "name": "triton",
        "image": IMAGE,
        "imageID": "",
        "ready": ready,
        "started": ready,
        "restartCount": restarts,
        "state": state,
        "lastState": more.pop("last", {}),
        **more,
    }


def serving_pod(name: str = "triton-b-5d9c7f-ready") -> dict[str, Any]:
    return _pod(
        name,
        phase="Running",
        conditions=[SCHEDULED, _cond("Initialized", "True"), _cond("Ready", "True")],
        containers=[_triton({"running": {"startedAt": "2026-01-01T00:00:05Z"}}, ready=True)],
        podIP="10.244.0.7",
    )


def image_pod(reason: str, message: str) -> dict[str, Any]:
    return _pod(
        conditions=[
            SCHEDULED,
            _cond("Initialized", "True"),
            _cond(
                "Ready", "False", "ContainersNotReady", "containers with unready status: [triton]"
            ),
        ],
        containers=[_triton({"waiting": {"reason": reason, "message": message}})],
    )


FETCH_MESSAGE = (
    "ArtifactNotFound: s3://provider-a-models/fmnist.tar.gz: the object store answered 404 "
    "(NoSuchKey)"
)


def fetch_failed_pod(*, backing_off: bool) -> dict[str, Any]:
    terminated = {
        "exitCode": 1,
        "reason": "Error",
        "message": FETCH_MESSAGE,
        "startedAt": "2026-01-01T00:00:01Z",
        "finishedAt": "2026-01-01T00:00:03Z",
    }
    fetcher = {
        "name": "fetch-models",
        "image": "ghcr.io/braid-dev/braid-gateway:0.1.0",
        "ready": False,
        "restartCount": 2 if backing_off else 0,
        "state": (
            {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 20s restarting failed container=fetch-models",
                }
            }
            if backing_off
            else {"terminated": terminated}
        ),
        "lastState": {"terminated": terminated} if backing_off else {},
    }
    return _pod(
        conditions=[
            SCHEDULED,
            _cond(
                "Initialized",
                "False",
                "ContainersNotInitialized",
                "containers with incomplete status: [fetch-models]",
            ),
            _cond(
                "Ready", "False", "ContainersNotReady", "containers with unready status: [triton]"
            ),
        ],
        init=[fetcher],
        containers=[_triton({"waiting": {"reason": "PodInitializing"}})],
    )


def crashing_pod() -> dict[str, Any]:
    return _pod(
        phase="Running",
        conditions=[
            SCHEDULED,
            _cond(
                "Ready", "False", "ContainersNotReady", "containers with unready status: [triton]"
            ),
        ],
        containers=[
            _triton(
                {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container=triton",
                    }
                },
                restarts=3,
                last={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "error: creating server: Internal - failed to load all models",
                    }
                },
            )
        ],
    )


UNSCHEDULABLE = (
    "0/7 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }, 6 node(s) "
    "didn't match Pod's node affinity/selector. preemption: 0/7 nodes are available: 7 "
    "Preemption is not helpful for scheduling."
)


def unschedulable_pod() -> dict[str, Any]:
    return _pod(
        node=None,
        conditions=[_cond("PodScheduled", "False", "Unschedulable", UNSCHEDULABLE)],
    )


@pytest.mark.parametrize(
    ("reason", "kubelet_message"),
    [
        ("ErrImagePull", f'failed to pull and unpack image "{IMAGE}": not found'),
        ("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'),
        (
            "ErrImageNeverPull",
            f'Container image "{IMAGE}" is not present with pull policy of Never',
        ),
    ],
)
def test_an_image_the_node_cannot_get_names_the_image_and_the_node(
    reason: str, kubelet_message: str
) -> None:
    got = block_readiness([image_pod(reason, kubelet_message)], want=1)
    assert not got.ready
    assert got.reason == reason
    assert IMAGE in got.message
    assert NODE in got.message
    assert kubelet_message in got.message
    assert "0/1 Triton pods ready" in got.message


@pytest.mark.parametrize("backing_off", [False, True])
def test_a_failed_artifact_fetch_carries_the_fetchers_termination_message(
    backing_off: bool,
) -> None:
    got = block_readiness([fetch_failed_pod(backing_off=backing_off)], want=1)
    assert (got.ready, got.reason) == (False, "ArtifactFetchFailed")
    assert got.message.startswith(FETCH_MESSAGE)


def test_a_crashing_triton_names_its_container_exit_code_and_last_message() -> None:
    got = block_readiness([crashing_pod()], want=1)
    assert (got.ready, got.reason) == (False, "CrashLoopBackOff")
    assert "container triton" in got.message
    assert "exit code 1" in got.message
    assert "failed to load all models" in got.message
    assert "3 restarts" in got.message


def test_an_unschedulable_pod_carries_the_schedulers_message() -> None:
    got = block_readiness([unschedulable_pod()], want=1)
    assert (got.ready, got.reason) == (False, "Unschedulable")
    assert UNSCHEDULABLE in got.message


def test_ready_only_when_the_expected_replicas_are_ready() -> None:
    one = block_readiness([serving_pod()], want=1)
    assert (one.ready, one.reason, one.message) == (True, "Available", "1/1 Triton pods ready")
    short = block_readiness([serving_pod()], want=2)
    assert (short.ready, short.reason) == (False, "Progressing")
    assert short.message == "1/2 Triton pods ready"


def test_one_failing_pod_of_two_keeps_the_block_not_ready_and_says_why() -> None:
    got = block_readiness([serving_pod(), crashing_pod()], want=2)
    assert (got.ready, got.reason) == (False, "CrashLoopBackOff")
    assert "(1/2 Triton pods ready)" in got.message
    assert (got.pods, got.ready_pods) == (2, 1)


def test_a_healthy_start_is_progressing_with_a_message_that_does_not_change() -> None:
    creating = _pod(
        conditions=[SCHEDULED],
        containers=[_triton({"waiting": {"reason": "ContainerCreating"}})],
    )
    pending = _pod(node=None)
    messages = {block_readiness([p], want=1).message for p in (creating, pending)}
    assert messages == {"0/1 Triton pods ready"}
    assert {block_readiness([p], want=1).reason for p in (creating, pending)} == {"Progressing"}


def test_the_most_actionable_problem_is_named_first() -> None:
    pods = [unschedulable_pod(), {**crashing_pod(), "metadata": {"name": "z-crash"}}]
    got = block_readiness(pods, want=2)
    assert got.reason == "CrashLoopBackOff"
    assert "1 more pods not serving" in got.message


def test_terminating_pods_count_for_nothing() -> None:
    going = serving_pod()
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    got = block_readiness([going], want=1)
    assert (got.ready, got.pods, got.ready_pods) == (False, 0, 0)


def test_scaled_to_zero_is_not_ready() -> None:
    got = block_readiness([], want=0)
    assert (got.ready, got.reason) == (False, "ScaledToZero")


def test_an_evicted_pod_and_a_missing_config_map_have_reasons_of_their_own() -> None:
    evicted = _pod(
        phase="Failed", reason="Evicted", message="The node was low on resource: memory."
    )
    problem = pod_problem(evicted)
    assert problem is not None
    assert (problem.reason, "low on resource: memory" in problem.message) == ("Evicted", True)
    config_error = _pod(
        conditions=[SCHEDULED],
        containers=[
            _triton(
                {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'configmap "triton-b-plan" not found',
                    }
                }
            )
        ],
    )
    got = block_readiness([config_error], want=1)
    assert got.reason == "CreateContainerConfigError"
    assert 'configmap "triton-b-plan" not found' in got.message


def test_a_long_message_is_cut_to_what_a_condition_holds() -> None:
    got = block_readiness([image_pod("ErrImagePull", "x" * 10_000)], want=1)
    assert len(got.message) <= 2048
    assert got.message.endswith("(0/1 Triton pods ready)")
