"""Stand in for the kubelet for ``helm test`` Pods on kwok nodes: run their script here.

kwok makes a Pod Running without running anything. For the chart's test Pod that would leave
``helm test`` waiting forever, and faking its result would test nothing. So, like
``kwok_runtime`` does for Triton, this runs the Pod's one container for real, on this
machine, with what a kubelet would have given it:

- its ``configMap`` volumes written to a directory, ``emptyDir`` volumes as empty ones, each
  mount path in the command line pointing there instead;
- the cluster DNS names of the Services it calls (``<svc>.<ns>.svc[.cluster.local]:<port>``)
  pointing at the local processes that serve them (the gateway runs here, not in its Pod);
- its ``env`` values.

The exit code becomes the Pod's phase (Succeeded / Failed) with a terminated container
status, which is what ``helm test`` waits for. Only Pods annotated ``helm.sh/hook: test`` are
touched.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from braid.kube.client import Kube
from braid.logs import log_event

logger = logging.getLogger(__name__)
HOOK_ANNOTATION = "helm.sh/hook"
OUTPUT_LIMIT = 4096
"""Bytes of the script's output kept in the Pod's termination message (kubelet's limit)."""


@dataclass(frozen=True)
class LocalCommand:
    """A test Pod's container as a local process."""

    argv: list[str]
    env: dict[str, str]
    files: dict[Path, str] = field(default_factory=dict)
    """Files to write first (ConfigMap volume keys)."""
    dirs: list[Path] = field(default_factory=list)
    """Directories to create first (mount points, emptyDir volumes)."""


def localise(
    pod: dict[str, Any],
    configmaps: Mapping[str, Mapping[str, str]],
    services: Mapping[str, str],
    root: Path,
) -> LocalCommand:
    """The Pod's single container as a command for this machine (pure).

    ``configmaps`` maps a ConfigMap name to its data, ``services`` a Service's
    ``name.namespace:port`` to the local ``host:port`` serving it.
    """
    spec = pod["spec"]
    if len(spec.get("containers") or []) != 1:
        raise ValueError("a test Pod with exactly one container is supported")
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts: dict[str, Path] = {}
    files: dict[Path, str] = {}
    dirs: list[Path] = []
    for mount in container.get("volumeMounts") or []:
        local = root / "volumes" / mount["name"]
        mounts[mount["mountPath"]] = local
        dirs.append(local)
        source = volumes.get(mount["name"]) or {}
        if "configMap" in source:
            name = source["configMap"]["name"]
            if name not in configmaps:
                raise LookupError(f"ConfigMap {name} of volume {mount['name']} does not exist")
            for key, text in configmaps[name].items():
                files[local / key] = text
        elif "emptyDir" not in source:
            raise ValueError(f"volume {mount['name']}: only configMap and emptyDir are supported")
    namespace = pod["metadata"]["namespace"]

    # One pass over every mount path, longest first: a second pass would rewrite the local
    # directories the first one wrote (they may live under /tmp, itself a mount path).
    paths = sorted(mounts, key=len, reverse=True)
    mount_re = (
        re.compile("|".join(rf"{re.escape(p)}(?![^/\s'\"])" for p in paths)) if paths else None
    )

    def rewrite(text: str) -> str:
        if mount_re is not None:
            text = mount_re.sub(lambda m: str(mounts[m.group(0)]), text)
        return _SERVICE.sub(lambda m: _service(m, namespace, services), text)

    argv = [rewrite(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    env = {e["name"]: rewrite(str(e.get("value", ""))) for e in container.get("env") or []}
    return LocalCommand(argv=argv, env=env, files=files, dirs=dirs)


_SERVICE = re.compile(
    r"(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?))?"
    r"\.svc(\.cluster\.local)?:(?P<port>\d+)"
)


def _service(match: re.Match[str], namespace: str, services: Mapping[str, str]) -> str:
    key = f"{match['name']}.{match['ns'] or namespace}:{match['port']}"
    if key not in services:
        raise LookupError(f"no local process serves Service {key}")
    return services[key]


def terminated_status(exit_code: int, output: str, started: datetime) -> dict[str, Any]:
    """The Pod status a kubelet reports for a finished single-container Pod (pure)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted"},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
        ],
        "containerStatuses": [
            {
                "name": "",  # filled by run_test_pod with the container's name
                "ready": False,
                "restartCount": 0,
                "image": "",
                "imageID": "",
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "message": output[-OUTPUT_LIMIT:],
                        "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "finishedAt": now,
                    }
                },
            }
        ],
    }


@dataclass
class ChartChartTestPodRunner:
    """Runs each Running ``helm test`` Pod of ``namespace`` once (a thread's ``run``)."""

    __test__ = False  # not a pytest class, despite the name

    kube: Kube
    namespace: str
    services: Mapping[str, str]
    workdir: Path
    timeout_s: float = 120.0
    results: dict[str, int] = field(default_factory=dict)
    """Exit code by Pod uid."""

    def pending(self) -> list[dict[str, Any]]:
        pods = self.kube.list("v1", "Pod", namespace=self.namespace)
        return [
            p
            for p in pods
            if (p["metadata"].get("annotations") or {}).get(HOOK_ANNOTATION) == "test"
            and (p.get("status") or {}).get("phase") == "Running"
            and p["metadata"]["uid"] not in self.results
            and not p["metadata"].get("deletionTimestamp")
        ]

    def run_pod(self, pod: dict[str, Any]) -> int:
        meta = pod["metadata"]
        root = self.workdir / meta["name"] / meta["uid"][:8]
        configmaps = {
            v["configMap"]["name"]: (
                self.kube.get("v1", "ConfigMap", v["configMap"]["name"], self.namespace) or {}
            ).get("data")
            or {}
            for v in pod["spec"].get("volumes") or []
            if "configMap" in v
        }
        started = datetime.now(UTC)
        try:
            command = localise(pod, configmaps, self.services, root)
            for d in command.dirs:
                d.mkdir(parents=True, exist_ok=True)
            for path, text in command.files.items():
                path.write_text(text)
            done = subprocess.run(
                command.argv,
                env={**os.environ, **command.env},
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
            code, output = done.returncode, done.stdout + done.stderr
        except (LookupError, ValueError, OSError) as exc:
            code, output = 127, f"braid test-pod runner: {exc}"
        except subprocess.TimeoutExpired:
            code, output = 124, f"braid test-pod runner: timed out after {self.timeout_s:g}s"
        status = terminated_status(code, output, started)
        status["containerStatuses"][0]["name"] = pod["spec"]["containers"][0]["name"]
        status["containerStatuses"][0]["image"] = pod["spec"]["containers"][0].get("image", "")
        self.kube.patch_status("v1", "Pod", meta["name"], self.namespace, status)
        (root / "output.log").parent.mkdir(parents=True, exist_ok=True)
        (root / "output.log").write_text(output)
        log_event(logger, "test_pod.finished", pod=meta["name"], exit_code=code)
        self.results[meta["uid"]] = code
        return code

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                for pod in self.pending():
                    self.run_pod(pod)
            except Exception as exc:  # the API server may blink; try again next round
                log_event(logger, "test_pod.round_failed", logging.WARNING, error=repr(exc))
            stop.wait(0.5)
