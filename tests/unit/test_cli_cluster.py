"""`braid dev cluster` answers bad input and no-op requests clearly, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from braid.cli import app

runner = CliRunner()


@pytest.fixture
def empty_env(tmp_path: Path) -> dict[str, str]:
    """A cache with no binaries and a state dir with no cluster."""
    return {"BRAID_CACHE": str(tmp_path / "cache"), "BRAID_STATE_DIR": str(tmp_path / "state")}


def test_unknown_cluster_command_fails_and_says_so() -> None:
    result = runner.invoke(app, ["dev", "cluster", "frobnicate"])
    assert result.exit_code != 0
    assert "No such command" in result.output
    assert "frobnicate" in result.output


def test_down_when_nothing_runs_is_fine(empty_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["dev", "cluster", "down"], env=empty_env)
    assert result.exit_code == 0
    assert "not running" in result.output


def test_status_when_nothing_runs_says_how_to_start(empty_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["dev", "cluster", "status"], env=empty_env)
    assert result.exit_code == 0
    assert "not running" in result.output
    assert "braid dev cluster up" in result.output


def test_up_without_binaries_fails_with_how_to_build_them(empty_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["dev", "cluster", "up"], env=empty_env)
    assert result.exit_code == 1
    assert "binaries missing" in result.output
    assert "make install-binaries" in result.output


@pytest.mark.parametrize(
    ("value", "env", "says"),
    [
        ("only-one", {}, "two namespaces"),
        ("a,b,c", {}, "two namespaces"),
        ("a,b", {"BRAID_CLUSTER_REAL_NODES": "0"}, "kwok-only demo"),
    ],
)
def test_demo_refuses_bad_namespaces_before_starting_anything(
    empty_env: dict[str, str], value: str, env: dict[str, str], says: str
) -> None:
    result = runner.invoke(app, ["demo", f"--namespaces={value}"], env={**empty_env, **env})
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    assert not (Path(empty_env["BRAID_STATE_DIR"]) / "cluster").exists()
