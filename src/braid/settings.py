"""One settings class for every component, read from the environment (prefix ``BRAID_``).

Kept in one place so the CLI, the harness, the operator and the gateway agree on where the
cache, the binaries and the state of the local stack live.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path.home() / ".cache" / "braid"


class Settings(BaseSettings):
    """Where things live; every path can be moved by an environment variable."""

    model_config = SettingsConfigDict(env_prefix="BRAID_", extra="ignore")

    cache: Path = Field(
        default_factory=_default_cache, description="Cache root (binaries, venv, builds)."
    )
    state_dir: Path | None = Field(
        default=None,
        description="State of the local stack (PKI, etcd data, logs); default <cache>/state.",
    )

    @property
    def bin_dir(self) -> Path:
        """Go-built binaries (kube-apiserver, etcd, kwok, helm...), one symlink per tool."""
        return self.cache / "bin"

    @property
    def state(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.cache / "state"


def get_settings() -> Settings:
    return Settings()
