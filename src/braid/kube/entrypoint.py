"""Run the operator process: handlers from ``braid.kube.operator``, settings from the env."""

from __future__ import annotations

import asyncio

import kopf
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from braid.logs import setup_logging


class OperatorSettings(BaseSettings):
    """``BRAID_OPERATOR_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BRAID_OPERATOR_", extra="ignore")

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty watches the whole cluster."
    )
    liveness_endpoint: str = Field(
        default="http://0.0.0.0:8080/healthz", description="kopf's liveness probe endpoint."
    )


def run_operator() -> None:
    import braid.kube.operator  # noqa: F401  (registers the handlers)

    settings = OperatorSettings()
    setup_logging()
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=True,
            liveness_endpoint=settings.liveness_endpoint,
        )
    )
