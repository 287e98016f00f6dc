"""SIGTERM and SIGHUP stop a long-running dev command (``braid demo``, ``braid serve``) exactly
as Ctrl-C does, and no signal can cut its tear-down short.

The first of SIGINT, SIGTERM or SIGHUP raises ``StopRequested`` (a ``KeyboardInterrupt``, so
every path written for Ctrl-C takes it) in the main thread. From then on, and from the moment
tear-down begins, further signals are reported and ignored: a second Ctrl-C, a supervisor
repeating SIGTERM or a closing terminal sending SIGHUP must not interrupt the code stopping
the servers half-way. SIGKILL cannot be handled; the command's ``OwnedProcesses`` records let
``braid dev cluster down`` stop what it left.

Exit status: a stop that interrupts start-up or the demo's traffic exits 128 + the signal's
number (130 Ctrl-C, 129 SIGHUP, 143 SIGTERM), as a shell reports a process the signal killed;
a stop while the command only serves (``braid serve``, ``braid demo --keep`` after its
summary) is the way to end it and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from braid.logs import log_event
from braid_dev.stack.processes import owned_processes, stop_owned

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived; ``exit_code`` is the conventional 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """The handler of the stop signals for one command (main thread only)."""

    def __init__(self) -> None:
        self.stopping = False
        self.received: list[int] = []

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def tearing_down(self) -> None:
        """From now on a signal is only reported. Installs the handler again: an event loop
        that took the signals over (the gateway's) puts the defaults back when it closes."""
        self.stopping = True
        self.install()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        name = signal.Signals(signum).name
        if self.stopping:
            log_event(logger, "command.signal_during_teardown", signal=name)
            sys.stderr.write(f"{name}: already stopping; waiting for every server to stop\n")
            return
        self.stopping = True
        log_event(logger, "command.stop_signal", signal=name)
        raise StopRequested(signum)


_current: StopSignals | None = None


@contextlib.contextmanager
def stoppable_command(owned_root: Path, command: str) -> Iterator[StopSignals]:
    """Run a command whose servers a stop signal, an error or its end all stop.

    Installs the stop-signal handler and records every server started inside in
    ``owned_root/<command>-<pid>`` (see ``OwnedProcesses``); on the way out, shielded from
    further signals, whatever is still recorded is stopped. Servers recorded by an earlier
    command that is gone (killed with SIGKILL) are stopped first.
    """
    global _current
    guard = StopSignals()
    guard.install()
    _current = guard
    try:
        stale = stop_owned(owned_root, running_owners=False)
        if stale:
            log_event(logger, "command.stale_servers_stopped", stopped=",".join(stale))
        with owned_processes(owned_root / f"{command}-{os.getpid()}", stay_closed=True):
            try:
                yield guard
            finally:
                guard.tearing_down()
    finally:
        _current = None
        for sig in STOP_SIGNALS:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)


@contextlib.contextmanager
def shielded_teardown() -> Iterator[None]:
    """Exit first from ``with ExitStack() as stack, shielded_teardown():``: the stack's
    callbacks then run with signals only reported (no-op outside ``stoppable_command``)."""
    try:
        yield
    finally:
        if _current is not None:
            _current.tearing_down()
