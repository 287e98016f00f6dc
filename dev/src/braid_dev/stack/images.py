"""Container images for the real nodes, built without a container engine.

A recipe lists the files an image holds and how it starts. The build lays them out as one
layer (a tar written by ``tarfile`` with fixed owners and times, so the same files give the
same bytes), turns that into an OCI image layout with ``umoci`` and archives the layout;
``ctr images import`` then loads it into a node's containerd. Archives are cached under
``<cache>/images`` by the hash of everything that goes into them, and the image's tag is
that hash, so a changed input is a new image and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from braid.logs import log_event

logger = logging.getLogger(__name__)

#: Registry part of every locally built image's name; nothing is ever pulled from it.
REGISTRY = "braid.local"
BUSYBOX = Path("/bin/busybox")


class ImageBuildError(RuntimeError):
    """An image could not be built or imported; the message says which step failed."""


@dataclass(frozen=True)
class ImageFile:
    """A file of the host copied into the image (``mode`` None keeps the host's)."""

    source: Path
    dest: str
    mode: int | None = None


@dataclass(frozen=True)
class ImageRecipe:
    """What an image holds and how its container starts."""

    name: str
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()  # (path in image, target)
    directories: tuple[str, ...] = ()
    text_files: tuple[tuple[str, str], ...] = ()  # (path in image, content)
    executable_files: tuple[str, ...] = ()  # text files written with mode 0755
    env: tuple[str, ...] = ("PATH=/usr/local/bin:/usr/bin:/bin",)
    labels: dict[str, str] = field(default_factory=dict)
    #: Layer tars added verbatim under the recipe's own layer (a Debian root filesystem).
    base_layers: tuple[Path, ...] = ()

    def content_hash(self) -> str:
        """The hash of every input: file contents, layout and start-up settings."""
        digest = hashlib.sha256()
        meta = {
            "name": self.name,
            "files": [(f.dest, f.mode) for f in self.files],
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
            "symlinks": self.symlinks,
            "directories": self.directories,
            "text_files": self.text_files,
            "executable_files": self.executable_files,
            "env": self.env,
            "labels": sorted(self.labels.items()),
            "format": 1,
        }
        digest.update(json.dumps(meta, sort_keys=True).encode())
        for path in (*self.base_layers, *(item.source for item in self.files)):
            digest.update(_file_digest(path).encode())
        return digest.hexdigest()

    @property
    def tag(self) -> str:
        return self.content_hash()[:16]

    @property
    def repository(self) -> str:
        return f"{REGISTRY}/{self.name}"

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _cached_digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_digest(path: str, _size: int, _mtime_ns: int) -> str:
    """A file's SHA-256, computed once per version of it (base layers are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type = kind
    info.mode = mode
    info.size = size
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def write_layer(recipe: ImageRecipe, path: Path) -> None:
    """The image's single layer, byte-for-byte the same for the same recipe."""
    entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def add_parents(dest: str) -> None:
        parts = Path(dest.lstrip("/")).parts[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            entries.setdefault(parent, (_tar_info(parent, tarfile.DIRTYPE, 0o755), None))

    for directory in recipe.directories:
        add_parents(directory + "/x")
        mode = 0o1777 if directory.rstrip("/") == "/tmp" else 0o755
        entries[directory.strip("/")] = (_tar_info(directory, tarfile.DIRTYPE, mode), None)
    for item in recipe.files:
        add_parents(item.dest)
        data = item.source.read_bytes()
        mode = item.mode if item.mode is not None else item.source.stat().st_mode & 0o7777
        info = _tar_info(item.dest, tarfile.REGTYPE, mode, len(data))
        entries[item.dest.strip("/")] = (info, data)
    for dest, text in recipe.text_files:
        add_parents(dest)
        encoded = text.encode()
        mode = 0o755 if dest in recipe.executable_files else 0o644
        info = _tar_info(dest, tarfile.REGTYPE, mode, len(encoded))
        entries[dest.strip("/")] = (info, encoded)
    for dest, target in recipe.symlinks:
        add_parents(dest)
        info = _tar_info(dest, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        entries[dest.strip("/")] = (info, None)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            info, content = entries[name]
            tar.addfile(info, io.BytesIO(content) if content is not None else None)


def _run(argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, cwd=cwd, check=False, timeout=600
    )
    if result.returncode != 0:
        raise ImageBuildError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def cache_dir(cache: Path) -> Path:
    return cache / "images"


def archive_path(cache: Path, recipe: ImageRecipe) -> Path:
    return cache_dir(cache) / f"{recipe.name}-{recipe.tag}.oci.tar"


def build_image(recipe: ImageRecipe, cache: Path) -> Path:
    """The recipe's OCI archive, built unless the cache has it already."""
    archive = archive_path(cache, recipe)
    if archive.exists():
        return archive
    umoci = shutil.which("umoci")
    if umoci is None:
        raise ImageBuildError("umoci is missing; install it with `make install-system`")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"image-{recipe.name}-", dir=archive.parent) as tmp:
        work = Path(tmp)
        layer = work / "layer.tar"
        write_layer(recipe, layer)
        oci = work / "oci"
        image = f"{oci}:{recipe.tag}"
        _run([umoci, "init", "--layout", str(oci)], "umoci init")
        _run([umoci, "new", "--image", image], "umoci new")
        for base in (*recipe.base_layers, layer):
            _run([umoci, "raw", "add-layer", "--image", image, str(base)], "umoci raw add-layer")
        config = [umoci, "config", "--image", image, "--config.workingdir=/"]
        config += ["--clear=config.entrypoint", "--clear=config.cmd", "--clear=config.env"]
        config += [f"--config.entrypoint={arg}" for arg in recipe.entrypoint]
        config += [f"--config.cmd={arg}" for arg in recipe.cmd]
        config += [f"--config.env={pair}" for pair in recipe.env]
        config += [f"--config.label={k}={v}" for k, v in sorted(recipe.labels.items())]
        _run(config, "umoci config")
        _run([umoci, "gc", "--layout", str(oci)], "umoci gc")
        partial = work / "image.tar"
        with tarfile.open(partial, "w") as tar:
            for entry in sorted(oci.iterdir()):
                tar.add(entry, arcname=entry.name)
        os.replace(partial, archive)
    log_event(
        logger,
        "image.built",
        image=recipe.reference,
        archive=archive,
        size_mb=round(archive.stat().st_size / 1e6, 2),
    )
    return archive


def image_size_bytes(archive: Path) -> int:
    return archive.stat().st_size


def pause_recipe(pause_binary: Path) -> ImageRecipe:
    """The sandbox image: the static ``pause`` program built from hack/images/pause."""
    return ImageRecipe(
        name="pause",
        files=(ImageFile(pause_binary.resolve(), "/pause", 0o755),),
        entrypoint=("/pause",),
    )


BUSYBOX_APPLETS = (
    "cat", "echo", "env", "hostname", "httpd", "id", "ip", "kill", "ls", "mkdir", "nc",
    "nslookup", "ps", "rm", "sh", "sleep", "test", "touch", "true", "wget",
)  # fmt: skip


def busybox_recipe(busybox: Path = BUSYBOX) -> ImageRecipe:
    """The smallest useful image: a static busybox (shell, httpd, wget, nslookup)."""
    return ImageRecipe(
        name="busybox",
        files=(ImageFile(busybox, "/bin/busybox", 0o755),),
        symlinks=tuple((f"/bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS),
        directories=("/tmp", "/var/www", "/etc"),
        text_files=(
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
            ("/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ),
        cmd=("/bin/sh",),
    )


def debian_rootfs(cache: Path, packages: Sequence[str], suite: str = "bookworm") -> Path:
    """A minimal Debian root filesystem with ``packages``, as a tar (mmdebstrap, no engine).

    Cached by suite and package list: a Debian point release does not rebuild it (delete
    the file to take one). The suite matches this machine's, so its Python (3.11) is the
    one wheels built here run on.
    """
    key = hashlib.sha256(json.dumps([suite, sorted(packages)]).encode()).hexdigest()[:16]
    rootfs = cache_dir(cache) / f"debian-{suite}-{key}.rootfs.tar"
    if rootfs.exists():
        return rootfs
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError("mmdebstrap is missing; install it with `make install-system`")
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    partial = rootfs.with_name(rootfs.name + ".part")
    argv = [mmdebstrap, "--variant=minbase", "--quiet", "--format=tar"]
    argv += [f"--include={','.join(sorted(packages))}"] if packages else []
    _run([*argv, suite, str(partial)], f"mmdebstrap {suite}")
    os.replace(partial, rootfs)
    log_event(
        logger, "image.rootfs_built", rootfs=rootfs, size_mb=round(rootfs.stat().st_size / 1e6)
    )
    return rootfs


def python_recipe(cache: Path) -> ImageRecipe:
    """Debian's Python 3.11 on a minimal root filesystem: the base of braid's Python images."""
    return ImageRecipe(
        name="python",
        files=(),
        base_layers=(debian_rootfs(cache, ["python3"]),),
        cmd=("python3",),
    )
