"""The ``braid`` command line: the local stack, model tooling and serving."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="braid",
    help="Collaborative DNN serving on Kubernetes: blocks, links, early exits, cost-driven paths.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="The local development stack (no container engine needed).", no_args_is_help=True)
cluster_app = typer.Typer(
    help="A real control plane on this machine: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes.",
    no_args_is_help=True,
)
app.add_typer(dev_app, name="dev")
dev_app.add_typer(cluster_app, name="cluster")


@app.command()
def version() -> None:
    """Print braid's version."""
    from braid import __version__

    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
