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

    # The local control plane (``braid dev cluster``). A port of 0 means "pick a free one"
    # (the previous run's port is preferred, so the kubeconfig stays the same).
    cluster_etcd_port: int = Field(default=0, ge=0, le=65535, description="etcd client port.")
    cluster_etcd_peer_port: int = Field(default=0, ge=0, le=65535, description="etcd peer port.")
    cluster_apiserver_port: int = Field(
        default=0, ge=0, le=65535, description="kube-apiserver secure port on 127.0.0.1."
    )
    cluster_controller_manager_port: int = Field(
        default=0, ge=0, le=65535, description="kube-controller-manager secure port."
    )
    cluster_scheduler_port: int = Field(
        default=0, ge=0, le=65535, description="kube-scheduler secure port."
    )
    cluster_advertise_address: str | None = Field(
        default=None,
        description="Address in the kubernetes Service endpoints; default: the host's address.",
    )
    cluster_real_nodes: int = Field(
        default=1,
        ge=0,
        le=4,
        description="Real nodes (kubelet + containerd + runc) in the local pool; 0: kwok only.",
    )
    cluster_start_timeout: float = Field(
        default=240.0, gt=0, description="Seconds `cluster up` may take before it gives up."
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


class OperatorSettings(BaseSettings):
    """``BRAID_OPERATOR_*`` environment variables: what the operator process is configured with."""

    model_config = SettingsConfigDict(env_prefix="BRAID_OPERATOR_", extra="ignore")

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty watches the whole cluster."
    )
    liveness_endpoint: str = Field(
        default="http://0.0.0.0:8080/healthz", description="kopf's liveness probe endpoint."
    )
    allow_local_paths: bool = Field(
        default=False,
        description="Admit file:// URIs (hostPath model repositories, catalogs on the "
        "operator's disk). The local stack only: in a cluster they let a tenant mount any "
        "node path or make the operator read any file.",
    )
    image_prefixes: list[str] = Field(
        default_factory=list,
        description="Image prefixes a Block's Triton may come from; empty allows any.",
    )
    fetcher_image: str = Field(
        default="ghcr.io/braid-dev/braid-gateway:0.1.0",
        max_length=255,
        description="Image of the init container that fetches s3://, gs:// and https:// "
        "model repositories (`braid artifacts assemble`; every braid image has the CLI).",
    )
    triton_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels every Triton pod also selects (a dedicated node group), beside "
        "its Block's tier and pool labels, which take precedence.",
    )
    triton_tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description="Tolerations every Triton pod gets (taints of dedicated Triton nodes), "
        "beside the GPU taint's that edge and cloud Blocks carry.",
    )
    webhook_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the validating admission webhook; 0 serves none.",
    )
    webhook_addr: str = Field(
        default="0.0.0.0", description="Address the webhook server listens on."
    )
    webhook_host: str | None = Field(
        default=None,
        description="Host name the webhook's self-signed certificate is made for.",
    )
    webhook_cert_dir: Path | None = Field(
        default=None,
        description="tls.crt and tls.key of the webhook (the chart's Secret, the local "
        "stack's files); without it the operator makes a self-signed certificate at start.",
    )
