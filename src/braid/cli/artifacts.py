"""``braid artifacts``: what the Triton pods' init container runs to fill their model
repository. A failure exits 1 and writes ``REASON: message`` to the container's
termination-message file, where the kubelet puts it in the pod's status for the operator
to carry into the Block's ``Ready=False`` condition."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from braid.artifacts.fetch import FetchOptions

artifacts_app = typer.Typer(
    help="Fetch artifacts by URI (s3://, gs://, https://) into a model repository.",
    no_args_is_help=True,
)

TERMINATION_LOG = Path("/dev/termination-log")


def _fail(reason: str, message: str, termination_log: Path) -> None:
    line = f"{reason}: {message}"
    typer.echo(f"error: {line}", err=True)
    # Outside a pod there is no termination-message file to write.
    with contextlib.suppress(OSError):
        termination_log.write_text(line[:4096])
    raise typer.Exit(1)


def _run(
    work: Callable[[FetchOptions], str],
    timeout_s: float,
    attempts: int,
    max_gib: float,
    termination_log: Path,
) -> None:
    """Run ``work`` with the options given; a ``FetchError`` ends the command with its
    reason where the kubelet reads it, anything else prints what ``work`` returned."""
    from braid.artifacts.fetch import FetchError, FetchOptions
    from braid.logs import setup_logging

    setup_logging(logging.INFO)
    options = FetchOptions(
        read_timeout_s=timeout_s, attempts=attempts, max_bytes=int(max_gib * 2**30)
    )
    try:
        typer.echo(work(options))
    except FetchError as exc:
        _fail(exc.reason, str(exc), termination_log)


TimeoutOpt = Annotated[
    float, typer.Option(help="Seconds a read may wait for the next bytes before a retry.")
]
AttemptsOpt = Annotated[int, typer.Option(min=1, max=20, help="Attempts before giving up.")]
MaxOpt = Annotated[float, typer.Option(help="Largest artifact accepted, GiB.")]
TermOpt = Annotated[Path, typer.Option(help="Where the failure reason is written for the kubelet.")]


@artifacts_app.command("fetch")
def fetch_command(
    uri: Annotated[str, typer.Argument(help="s3://BUCKET/KEY, gs://BUCKET/KEY or https://...")],
    dest: Annotated[Path, typer.Option(help="File to write.")],
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 (hex).")] = None,
    timeout_s: TimeoutOpt = 60.0,
    attempts: AttemptsOpt = 5,
    max_gib: MaxOpt = 64.0,
    termination_log: TermOpt = TERMINATION_LOG,
) -> None:
    """Fetch one artifact (streamed, retried with resume, digest-checked)."""
    from braid.artifacts.fetch import fetch

    def work(options: FetchOptions) -> str:
        got = fetch(uri, dest, sha256, options)
        return f"{got.path} {got.size} bytes sha256={got.sha256}"

    _run(work, timeout_s, attempts, max_gib, termination_log)


@artifacts_app.command("assemble")
def assemble_command(
    plan: Annotated[Path, typer.Option(help="The operator's repository plan (JSON).")],
    root: Annotated[Path, typer.Option(help="The model repository to fill.")] = Path("/models"),
    timeout_s: TimeoutOpt = 60.0,
    attempts: AttemptsOpt = 5,
    max_gib: MaxOpt = 64.0,
    termination_log: TermOpt = TERMINATION_LOG,
) -> None:
    """Fetch every artifact of a plan, unpack archives, apply the Block's serving settings."""
    from pydantic import ValidationError

    from braid.api.repository_plan import RepositoryPlan
    from braid.artifacts.plan import assemble

    try:
        parsed = RepositoryPlan.model_validate_json(plan.read_bytes()[: 4 << 20])
    except (OSError, ValidationError) as exc:
        _fail("InvalidPlan", str(exc).splitlines()[0], termination_log)
        return

    def work(options: FetchOptions) -> str:
        fetched = assemble(parsed, root, options)
        return f"{root}: {len(fetched)} artifacts, {len(parsed.models)} models"

    _run(work, timeout_s, attempts, max_gib, termination_log)
