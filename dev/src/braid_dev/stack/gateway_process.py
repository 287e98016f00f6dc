"""Run ``braid gateway`` as a process of its own, as benchmarks want it (own GIL, own CPU).

Returns once the gateway prints its addresses; its output keeps being drained so a full pipe
never blocks it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from braid_dev.stack.processes import StartupError

_READY = re.compile(r"REST http://(\S+)\s+gRPC (\S+)")


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    http_address: str
    grpc_address: str
    log: list[str]

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT (the gateway drains in-flight requests), SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway_process(
    catalog: Path,
    endpoints: Mapping[str, str],
    routing: Path,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> GatewayProcess:
    """``braid gateway`` on free ports; ``endpoints`` maps a server role to a gRPC address."""
    argv = [sys.executable, "-m", "braid.cli", "gateway", "--catalog", str(catalog)]
    for role, address in endpoints.items():
        argv += ["--endpoint", f"{role}={address}"]
    argv += ["--routing", str(routing), "--http-port", "0", "--grpc-port", "0", *extra]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    stdout = process.stdout
    log: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stdout.readline()
        if not line and process.poll() is not None:
            break
        log.append(line.rstrip())
        match = _READY.search(line)
        if match:
            threading.Thread(
                target=lambda: log.extend(x.rstrip() for x in stdout), daemon=True
            ).start()
            return GatewayProcess(process, match.group(1), match.group(2), log)
    process.kill()
    raise StartupError("the gateway did not start:\n" + "\n".join(log))
