"""Assemble a pod's model repository: fetch every artifact of its plan, unpack archives,
check every model the pod serves is there, and write the Block's serving settings into each
model's ``config.pbtxt``.

The plan is the operator's (a ConfigMap mounted into the init container), so what a pod
serves follows the Block spec without re-exporting anything: the weights and signatures come
from the artifact, batching and instance groups (KIND_GPU on GPU pools) from the Block.
Archives hold regular files and directories only, each under the target (no absolute paths,
no ``..``, no links, no devices), within a size bound, so a hostile archive cannot write
outside the repository or fill the node's disk. tarfile's ``data`` filter applies on top where
the interpreter has it (3.11.4+; Debian bookworm's 3.11.2, the images' Python, has not).
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from braid.api.repository_plan import RepositoryPlan
from braid.artifacts.fetch import Fetched, FetchError, FetchOptions, fetch
from braid.artifacts.serving import apply_serving
from braid.logs import log_event

log = logging.getLogger(__name__)


def _check_member(archive: str, member: tarfile.TarInfo) -> None:
    """A Triton repository is files and directories below one root; anything else is refused."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise FetchError("InvalidArchive", f"{archive}: {member.name!r} leaves the repository")
    if not (member.isfile() or member.isdir()):
        raise FetchError(
            "InvalidArchive", f"{archive}: {member.name!r} is not a regular file or directory"
        )
    # No setuid/setgid/sticky bits and nothing executable by others than its owner's group.
    member.mode &= 0o775


def unpack(archive: Path, target: Path, max_bytes: int) -> int:
    """Unpack a tar archive under ``target``; refuses escapes, links out and tar bombs."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive.name, member)
            total = sum(m.size for m in members if m.isfile())
            if total > max_bytes:
                raise FetchError(
                    "ArtifactTooLarge",
                    f"{archive.name} unpacks to {total} bytes (limit {max_bytes})",
                )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - interpreters before 3.11.4
                tar.extractall(target, members=members)
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
    repository = root / plan.repository
    for model in plan.models:
        config = repository / model / "config.pbtxt"
        if not config.is_file():
            raise FetchError(
                "ModelMissingFromRepository",
                f"{plan.repository}/{model}/config.pbtxt is not in the fetched repository",
            )
        if plan.serving is not None:
            where = f"{model}/config.pbtxt"
            config.write_text(apply_serving(config.read_text()[: 1 << 20], plan.serving, where))
    log_event(
        log, "repository_assembled", root=root, artifacts=len(fetched), models=len(plan.models)
    )
    return fetched
