"""The data plane's command-line parsing."""

from __future__ import annotations

import pytest
import typer

from braid.cli.gateway import parse_endpoints


def test_endpoint_options_become_servers_and_model_overrides() -> None:
    parsed = parse_endpoints(["local=127.0.0.1:8001", "model:toy.b1=10.0.0.5:8001", "host=h:1"])
    assert parsed == {
        "servers": {"local": "127.0.0.1:8001", "host": "h:1"},
        "models": {"toy.b1": "10.0.0.5:8001"},
    }


@pytest.mark.parametrize("value", ["local", "local=", "=1.2.3.4:5", "local=nohostport"])
def test_malformed_endpoint_options_are_refused(value: str) -> None:
    with pytest.raises(typer.BadParameter, match="ROLE=HOST:PORT"):
        parse_endpoints([value])
