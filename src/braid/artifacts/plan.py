"""Assemble a pod's model repository: fetch every artifact of its plan, unpack archives, and
write the ``config.pbtxt`` files the operator rendered from the Block.

The plan is the operator's (a ConfigMap mounted into the init container), so what a pod
serves follows the Block spec without re-exporting anything: the Triton configs come from
the plan, the weights from their URIs. Archives are unpacked with tarfile's ``data`` filter
(no absolute paths, no ``..``, no links leaving the target, no devices) and a size bound, so
a hostile archive cannot write outside the repository or fill the node's disk.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

from braid.artifacts.fetch import Fetched, FetchError, FetchOptions, fetch
from braid.logs import log_event

log = logging.getLogger(__name__)

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


def unpack(archive: Path, target: Path, max_bytes: int) -> int:
    """Unpack a tar archive under ``target``; refuses escapes, links out and tar bombs."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            total = sum(m.size for m in members if m.isfile())
            if total > max_bytes:
                raise FetchError(
                    "ArtifactTooLarge",
                    f"{archive.name} unpacks to {total} bytes (limit {max_bytes})",
                )
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise FetchError("InvalidArchive", f"{archive.name}: {exc}") from None
    return total


def assemble(
    plan: RepositoryPlan, root: Path, options: FetchOptions | None = None
) -> list[Fetched]:
    """Carry out ``plan`` under ``root``; the first failure raises with its reason."""
    options = options or FetchOptions()
    root.mkdir(parents=True, exist_ok=True)
    fetched = []
    for item in plan.artifacts:
        dest = root / item.dest
        if item.unpack:
            archive = root / ".braid-download" / PurePosixPath(item.dest).name
            got = fetch(item.uri, archive, item.sha256, options)
            unpack(archive, dest, options.max_bytes)
            shutil.rmtree(archive.parent, ignore_errors=True)
        else:
            got = fetch(item.uri, dest, item.sha256, options)
        fetched.append(got)
    for config in plan.configs:
        path = root / config.model / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.config_pbtxt)
    log_event(
        log, "repository_assembled", root=root, artifacts=len(fetched), configs=len(plan.configs)
    )
    return fetched
