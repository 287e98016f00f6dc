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


class PlannedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=253)
    config_pbtxt: str = Field(max_length=1 << 20)

    @field_validator("model")
    @classmethod
    def _model_inside(cls, value: str) -> str:
        return _inside(value)


class RepositoryPlan(BaseModel):
    """What one pod's init container does, in order: fetch, unpack, write configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifacts: list[PlannedArtifact] = Field(default_factory=list, max_length=256)
    configs: list[PlannedConfig] = Field(default_factory=list, max_length=256)
