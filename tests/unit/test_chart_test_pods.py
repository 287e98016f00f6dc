"""The helm-test Pod runner's pure part: a Pod spec as a command for this machine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from braid_dev.chart_test_pods import localise, terminated_status

pytestmark = pytest.mark.unit

SCRIPT = """curl -fsS http://braid-gateway.provider-a.svc:8000/v2/health/ready
curl -fsS -d @/etc/braid-test/request.json http://braid-gateway.provider-a.svc.cluster.local:8000/v2/models/m/infer \\
  | tee /tmp/response.json
grep -q '"outputs"' /tmp/response.json
"""


def pod() -> dict[str, object]:
    return {
        "metadata": {"name": "t", "namespace": "provider-a", "uid": "u"},
        "spec": {
            "containers": [
                {
                    "name": "infer",
                    "command": ["/bin/sh", "-ec"],
                    "args": [SCRIPT],
                    "env": [{"name": "URL", "value": "http://braid-gateway.provider-a.svc:8000"}],
                    "volumeMounts": [
                        {"name": "request", "mountPath": "/etc/braid-test"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "request", "configMap": {"name": "req"}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def test_mounts_and_service_names_point_at_this_machine(tmp_path: Path) -> None:
    cmd = localise(
        pod(),
        {"req": {"request.json": "{}"}},
        {"braid-gateway.provider-a:8000": "127.0.0.1:41000"},
        tmp_path,
    )
    script = cmd.argv[2]
    assert cmd.argv[:2] == ["/bin/sh", "-ec"]
    assert "svc" not in script
    assert script.count("127.0.0.1:41000") == 2
    assert f"@{tmp_path}/volumes/request/request.json" in script
    assert script.count(f" {tmp_path}/volumes/tmp/response.json") == 2
    assert " /tmp/response.json" not in script
    assert cmd.files == {tmp_path / "volumes" / "request" / "request.json": "{}"}
    assert cmd.env == {"URL": "http://127.0.0.1:41000"}


def test_a_service_nobody_serves_here_is_named(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match=r"braid-gateway\.provider-a:8000"):
        localise(pod(), {"req": {}}, {}, tmp_path)


def test_a_missing_configmap_is_named(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="ConfigMap req"):
        localise(pod(), {}, {"braid-gateway.provider-a:8000": "x:1"}, tmp_path)


def test_exit_codes_become_the_pod_phase() -> None:
    started = datetime.now(UTC)
    ok = terminated_status(0, "fine", started)
    failed = terminated_status(22, "curl: (22) 404", started)
    assert ok["phase"] == "Succeeded"
    assert failed["phase"] == "Failed"
    term = failed["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 22
    assert term["reason"] == "Error"
    assert "404" in term["message"]
