"""The ``braid`` command line: one module per command group (models, dimee, controller,
gateway). Other installed packages add theirs through the ``braid.cli`` entry points: the
dev package brings ``braid dev``, ``braid demo`` and ``braid serve``."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

# Each group module defers torch, matplotlib and the servers until one of its commands runs.
from braid.cli.artifacts import artifacts_app
from braid.cli.controller import controller_app
from braid.cli.dimee import dimee_app
from braid.cli.gateway import gateway_command
from braid.cli.models import models_app

app = typer.Typer(
    name="braid",
    help="Collaborative DNN serving on Kubernetes: blocks, links, early exits, cost-driven paths.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(dimee_app, name="dimee")
app.add_typer(controller_app, name="controller")
app.add_typer(artifacts_app, name="artifacts")
app.command("gateway")(gateway_command)


@app.command()
def version() -> None:
    """Print braid's version."""
    from braid import __version__

    typer.echo(__version__)


def add_plugins(root: typer.Typer) -> None:
    """Join the commands other packages contribute: a Typer as a group, a function as a
    command. A plugin that fails to load is skipped with a warning, not a broken CLI."""
    for point in entry_points(group="braid.cli"):
        try:
            command = point.load()
        except Exception as exc:
            typer.echo(f"warning: braid plugin {point.name!r} did not load: {exc}", err=True)
            continue
        if isinstance(command, typer.Typer):
            root.add_typer(command, name=point.name)
        else:
            root.command(point.name)(command)


add_plugins(app)

if __name__ == "__main__":  # pragma: no cover
    app()
