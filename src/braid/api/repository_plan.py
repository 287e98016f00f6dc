"""A pod's model-repository plan: what its init container fetches and which Triton configs it
writes. The operator renders it from the Block (``braid.render.model_repository``) into a
ConfigMap; ``braid artifacts assemble`` carries it out. Pure types, shared by both.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

SHA256_HEX = r"^[0-9a-f]{64}$"


def _inside(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"{path!r} must be a relative path without '..'")
    return str(pure)


class PlannedArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(min_length=1, max_length=2048)
    sha256: str | None = Field(default=None, pattern=SHA256_HEX)
    dest: str = Field(min_length=1, max_length=512, description="Path under the repository root.")
    unpack: bool = Field(default=False, description="A .tar / .tar.gz unpacked into dest.")

    @field_validator("dest")
    @classmethod
    def _dest_inside(cls, value: str) -> str:
        return _inside(value)


class ServingSettings(BaseModel):
    """How the Block wants Triton to serve each model: written over the exported configs'
    batching and instance groups, so a Block edit changes serving without a re-export."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(ge=0, le=1024)
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = Field(default=100, ge=0, le=10_000_000)
    preferred_batch_sizes: list[int] = Field(default_factory=list, max_length=16)
    instance_kind: str = Field(pattern=r"^KIND_(CPU|GPU)$")
    instance_count: int = Field(ge=1, le=64)
    gpus: list[int] = Field(default_factory=list, max_length=16)


class RepositoryPlan(BaseModel):
    """What one pod's init container does, in order: fetch and unpack the artifacts, check
    every served model is there, and write the Block's serving settings into its config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifacts: list[PlannedArtifact] = Field(default_factory=list, max_length=256)
    repository: str = Field(
        default="repository", min_length=1, max_length=253, description="Triton's repository dir."
    )
    models: list[str] = Field(default_factory=list, max_length=256)
    """The models the pod serves; each must be in the repository once it is unpacked."""
    serving: ServingSettings | None = None

    @field_validator("repository")
    @classmethod
    def _repository_inside(cls, value: str) -> str:
        return _inside(value)

    @field_validator("models")
    @classmethod
    def _plain_model_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if "/" in name or name in (".", "..") or not name:
                raise ValueError(f"model name {name!r} must be a plain directory name")
        return value
