"""A Block's Ready condition from its pods' status. Pure.

A Deployment's ``readyReplicas`` says *that* a Block does not serve, never *why*; the why is
in its pods' status, where the scheduler, the kubelet and the artifact fetcher put it: an
Unschedulable condition, a container waiting on ``ErrImagePull``, a fetcher that exited with
its reason in the termination message, a Triton that keeps crashing. This reads it the way
``kubectl describe pod`` would be read by a person, and says it in the Block's condition.

Only failures get reasons of their own. The steps of a healthy start (ContainerCreating,
PodInitializing, a pod not yet scheduled) stay ``Progressing`` with the same message, so a
rollout of 1,000 Blocks writes no more statuses than before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from braid.render.block import FETCHER_CONTAINER

IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
"""The kubelet's waiting reasons for an image it cannot get."""
STARTING_REASONS = ("ContainerCreating", "PodInitializing")
"""Waiting reasons of a healthy start."""
ARTIFACT_FETCH_FAILED = "ArtifactFetchFailed"
MAX_MESSAGE = 2048

# Which problem a Block's condition names when its pods have several: what a person can fix
# (an artifact, an image, a crashing server) before what follows from it or from the cluster.
_RANK = {
    ARTIFACT_FETCH_FAILED: 0,
    **dict.fromkeys(IMAGE_REASONS, 1),
    "CrashLoopBackOff": 2,
    "InitContainerFailed": 3,
    "PodFailed": 5,
    "Unschedulable": 6,
}
_OTHER_RANK = 4


@dataclass(frozen=True)
class PodProblem:
    """Why one pod does not serve, in the words of a condition."""

    pod: str
    reason: str
    message: str

    @property
    def rank(self) -> int:
        return _RANK.get(self.reason, _OTHER_RANK)


@dataclass(frozen=True)
class Readiness:
    """The Block's Ready condition and the pod counts its status shows."""

    ready: bool
    reason: str
    message: str
    pods: int
    ready_pods: int


def _condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    return _condition(pod, "Ready").get("status") == "True"


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _failed_run(container: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container's failed termination: its current state, else the last one (a container
    in back-off waits, and its failure is in ``lastState``)."""
    for key in ("state", "lastState"):
        terminated = (container.get(key) or {}).get("terminated")
        if terminated and int(terminated.get("exitCode") or 0) != 0:
            return dict(terminated)
    return None


def _exit_text(terminated: Mapping[str, Any]) -> str:
    text = f"exit code {terminated.get('exitCode')}"
    if terminated.get("reason"):
        text += f" ({terminated['reason']})"
    if (terminated.get("message") or "").strip():
        text += f": {terminated['message'].strip()}"
    return text


def _container_problem(
    pod_name: str, node: str, container: Mapping[str, Any], init: bool
) -> PodProblem | None:
    name = container.get("name", "?")
    kind = "init container" if init else "container"
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason") or ""
    detail = (waiting.get("message") or "").strip()
    if reason in IMAGE_REASONS:
        message = (
            f"image {container.get('image', '?')} of {kind} {name} in pod {pod_name} "
            f"cannot be pulled on node {node}"
        )
        return PodProblem(pod_name, reason, f"{message}: {detail}" if detail else message)
    failed = _failed_run(container)
    if init and name == FETCHER_CONTAINER and failed is not None:
        # The fetcher writes "REASON: message" (naming the URI and the cause) to its
        # termination log; the kubelet puts it in the status, and that is what a person needs.
        message = (failed.get("message") or "").strip() or (
            f"{kind} {name} of pod {pod_name}: {_exit_text(failed)}"
        )
        return PodProblem(pod_name, ARTIFACT_FETCH_FAILED, message)
    if reason == "CrashLoopBackOff":
        last = _exit_text(failed) if failed is not None else "no exit recorded"
        return PodProblem(
            pod_name,
            reason,
            f"{kind} {name} of pod {pod_name} keeps crashing "
            f"({container.get('restartCount', 0)} restarts); last {last}",
        )
    if init and failed is not None and (container.get("state") or {}).get("terminated"):
        return PodProblem(
            pod_name,
            "InitContainerFailed",
            f"{kind} {name} of pod {pod_name}: {_exit_text(failed)}",
        )
    if reason and reason not in STARTING_REASONS:
        # CreateContainerConfigError (a missing Secret or ConfigMap), RunContainerError, ...
        message = f"{kind} {name} of pod {pod_name} on node {node} is waiting: {reason}"
        return PodProblem(pod_name, reason, f"{message}: {detail}" if detail else message)
    return None


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """Why ``pod`` does not serve, or None while it starts (or serves) as it should."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or "?"
    if status.get("phase") == "Failed":
        why = status.get("reason") or "PodFailed"
        return PodProblem(name, why, f"pod {name} failed: {status.get('message') or why}")
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return PodProblem(
            name, "Unschedulable", f"pod {name}: {scheduled.get('message') or 'no node fits'}"
        )
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or []:
            problem = _container_problem(name, node, container, init)
            if problem is not None:
                return problem
    return None


def block_readiness(pods: Sequence[Mapping[str, Any]], want: int) -> Readiness:
    """The Ready condition of a Block that asks for ``want`` pods, from the pods it has.

    Ready only when ``want`` pods (at least one) are Ready; else the most actionable problem
    of any pod, or ``Progressing`` while they start. Terminating pods count for nothing.
    """
    live = sorted(
        (p for p in pods if not _terminating(p)),
        key=lambda p: str((p.get("metadata") or {}).get("name")),
    )
    ready = sum(1 for p in live if pod_is_ready(p))
    count = f"{ready}/{want} Triton pods ready"
    if want == 0:
        return Readiness(
            False,
            "ScaledToZero",
            "spec.replicas is 0: no Triton pod serves this Block",
            len(live),
            ready,
        )
    if ready >= want:
        return Readiness(True, "Available", count, len(live), ready)
    problems = [p for p in (pod_problem(pod) for pod in live if not pod_is_ready(pod)) if p]
    if not problems:
        return Readiness(False, "Progressing", count, len(live), ready)
    worst = min(problems, key=lambda p: p.rank)
    others = len(problems) - 1
    suffix = f" ({count}" + (f"; {others} more pods not serving)" if others else ")")
    message = worst.message[: MAX_MESSAGE - len(suffix)] + suffix
    return Readiness(False, worst.reason, message, len(live), ready)


def fetch_problem(pods: Sequence[Mapping[str, Any]]) -> PodProblem | None:
    """Why the artifact fetcher of any live pod in ``pods`` failed, or None.

    For pods that are not a Block's (the gateway's, whose init container fetches a DIMEE
    pools archive): only the fetcher's failure is the artifact's to report; the rest of
    such a pod's life is its Deployment's business."""
    for pod in sorted(
        (p for p in pods if not _terminating(p)),
        key=lambda p: str((p.get("metadata") or {}).get("name")),
    ):
        problem = pod_problem(pod)
        if problem is not None and problem.reason == ARTIFACT_FETCH_FAILED:
            return problem
    return None
