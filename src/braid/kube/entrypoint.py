"""Run the operator process: handlers from ``braid.kube.operator``, settings from the env."""

from __future__ import annotations

import asyncio

import kopf

from braid.logs import setup_logging
from braid.settings import OperatorSettings


def run_operator() -> None:
    import braid.kube.operator  # noqa: F401  (registers the handlers)

    settings = OperatorSettings()
    if settings.webhook_port:
        from braid.kube.webhook import register_webhooks

        register_webhooks(settings)
    setup_logging()
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=True,
            liveness_endpoint=settings.liveness_endpoint,
        )
    )
