"""braid's own images, built from the repository's recipes without a container engine.

The Dockerfiles (``operator/``, ``controllers/``, ``gateway/``, ``runtime/``) are the recipes
a real CI builds with Docker or buildah. Here the same content is laid out in layers:

1. a Debian bookworm root filesystem with Python 3.11 (mmdebstrap, cached by package list);
2. the Python dependencies, ``pip install --target`` from the registry into the image's
   ``dist-packages`` (cached by the requirement pins);
3. braid itself, from a wheel of this checkout (cached by the hash of ``src/braid``);
4. the recipe's own small layer (start-up scripts, the runtime's backend links).

Every layer tar is written with fixed owners and times, so the same inputs give the same
bytes and the image tag (the content hash) only moves when an input does. The operator,
controller and gateway images share layers 1-3, so a node stores them once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from braid.logs import log_event
from braid_dev.stack import images
from braid_dev.stack.images import ImageBuildError, ImageFile, ImageRecipe

logger = logging.getLogger(__name__)

SITE = "usr/local/lib/python3.11/dist-packages"
"""Where Debian's Python 3.11 looks for locally installed packages."""
BRAID_UID = 10001
"""The chart's pods run as this user (the Dockerfiles' ``useradd --uid 10001 braid``)."""
TRITON_UID = 1000
"""``triton-server`` in NVIDIA's images; the operator's Triton pods run as it."""
PYTRITON = "nvidia-pytriton==0.7.0"
_PYTRITON_HOME = f"/{SITE}/pytriton/tritonserver"
BASE_PACKAGES = ("python3", "ca-certificates")
RUNTIME_PACKAGES = ("python3", "libpython3.11", "libstdc++6")
_LAYER_FORMAT = 1


@dataclass(frozen=True)
class BuiltImage:
    """A recipe and its archive, as the nodes import it and the chart names it."""

    recipe: ImageRecipe
    archive: Path

    @property
    def size_mb(self) -> float:
        """The archive's size: the compressed layers a registry would store and pull."""
        return round(self.archive.stat().st_size / 1e6, 1)


def _tar_tree(root: Path, dest: Path) -> None:
    """``root``'s files as a layer tar with fixed owners and times (reproducible bytes)."""
    partial = dest.with_name(dest.name + ".part")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isreg():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    os.replace(partial, dest)


def _strip(site: Path) -> None:
    """Drop what an image never runs: caches compiled here and scripts whose shebang names
    this machine's interpreter (the images start Python with ``-m``)."""
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(site / "bin", ignore_errors=True)


def _pip_install(site: Path, installs: Sequence[Sequence[str]]) -> None:
    """Run each pip argument list into ``site`` (this machine's Python is the image's 3.11)."""
    site.mkdir(parents=True)
    for args in installs:
        argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
        argv += ["--disable-pip-version-check", "--upgrade", "--target", str(site), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
        if done.returncode != 0:
            raise ImageBuildError(f"pip install {' '.join(args)}: {done.stderr.strip()}")
    _strip(site)


def _layer_cache(cache: Path) -> Path:
    path = images.cache_dir(cache) / "layers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pip_layer(cache: Path, name: str, installs: Sequence[Sequence[str]]) -> Path:
    """A layer of packages installed from the registry into the image's ``dist-packages``.

    ``installs`` are pip argument lists run in order into one target (e.g. one with
    ``--no-deps``, one with a requirements list). Cached by the arguments: the pins are
    exact, so the same arguments are the same packages.
    """
    key_text = json.dumps([_LAYER_FORMAT, sys.version_info[:2], [list(a) for a in installs]])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    layer = _layer_cache(cache) / f"{name}-{key}.tar"
    if layer.exists():
        return layer
    with tempfile.TemporaryDirectory(prefix=f"layer-{name}-", dir=layer.parent) as tmp:
        root = Path(tmp) / "root"
        _pip_install(root / SITE, installs)
        _tar_tree(root, layer)
    log_event(logger, "image.layer_built", layer=layer, size_mb=round(layer.stat().st_size / 1e6))
    return layer


def _source_hash(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _product_sources(repo: Path) -> list[Path]:
    files = [repo / "pyproject.toml", repo / "README.md"]
    files += [p for p in (repo / "src" / "braid").rglob("*") if p.is_file()]
    return [p for p in files if "__pycache__" not in p.parts]


def braid_layer(cache: Path, repo: Path) -> Path:
    """braid from a wheel of this checkout (no dependencies: those are their own layer).

    The wheel is built from a copy of the product's files, so a stale setuptools ``build/``
    folder in the checkout can never leak into the image."""
    sources = _product_sources(repo)
    key = _source_hash(p.relative_to(repo) for p in sources) + _source_hash(sources)
    layer = _layer_cache(cache) / f"braid-{key[:16]}.tar"
    if layer.exists():
        return layer
    with tempfile.TemporaryDirectory(prefix="layer-braid-", dir=layer.parent) as tmp:
        tree = Path(tmp) / "tree"
        for path in sources:
            target = tree / path.relative_to(repo)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        wheels = Path(tmp) / "wheels"
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
        argv += ["--no-build-isolation", "--wheel-dir", str(wheels), str(tree)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise ImageBuildError(f"building braid's wheel: {done.stderr.strip()}")
        wheel = next(wheels.glob("braid-*.whl"))
        root = Path(tmp) / "root"
        _pip_install(root / SITE, [["--no-deps", str(wheel)]])
        _tar_tree(root, layer)
    return layer


def serving_requirements(repo: Path) -> list[str]:
    """The product's own pins (``[project] dependencies``): what every braid image holds."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def runtime_requirements(repo: Path) -> list[str]:
    """The Triton runtime's pins, from the file its Dockerfile installs."""
    lines = (repo / "runtime" / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _passwd(user: str, uid: int) -> tuple[tuple[str, str], ...]:
    """/etc/passwd and /etc/group with root and the image's user (as ``useradd`` leaves)."""
    passwd = f"root:x:0:0:root:/root:/bin/sh\n{user}:x:{uid}:{uid}::/tmp:/usr/sbin/nologin\n"
    group = f"root:x:0:\n{user}:x:{uid}:\n"
    return (("/etc/passwd", passwd), ("/etc/group", group))


_BRAID_ENV = (
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "PYTHONUNBUFFERED=1",
    "HOME=/tmp",
)
_BRAID_SCRIPT = "#!/usr/bin/python3\nimport sys\n\nfrom braid.cli import app\n\nsys.exit(app())\n"


def _braid_recipe(
    name: str, layers: tuple[Path, ...], entrypoint: tuple[str, ...], extra_env: tuple[str, ...]
) -> ImageRecipe:
    return ImageRecipe(
        name=name,
        files=(),
        base_layers=layers,
        entrypoint=entrypoint,
        directories=("/tmp", "/app"),
        # `braid` on PATH as `pip install .` leaves it: the chart's commands and the
        # operator's fetcher init container (`braid artifacts assemble`) call it.
        text_files=(*_passwd("braid", BRAID_UID), ("/usr/local/bin/braid", _BRAID_SCRIPT)),
        executable_files=("/usr/local/bin/braid",),
        env=(*_BRAID_ENV, *extra_env),
        labels={"org.opencontainers.image.source": "braid"},
    )


def braid_recipes(cache: Path, repo: Path) -> dict[str, ImageRecipe]:
    """The operator, controller and gateway images (the Dockerfiles beside their entry points)."""
    base = images.debian_rootfs(cache, list(BASE_PACKAGES))
    deps = pip_layer(cache, "serving-deps", [serving_requirements(repo)])
    product = braid_layer(cache, repo)
    layers = (base, deps, product)
    operator_main = repo / "operator" / "main.py"
    operator = _braid_recipe(
        "braid-operator",
        layers,
        ("python3", "/app/operator/main.py"),
        ("MALLOC_ARENA_MAX=2",),
    )
    operator = replace(operator, files=(ImageFile(operator_main, "/app/operator/main.py", 0o644),))
    return {
        "operator": operator,
        "controller": _braid_recipe("braid-controller", layers, ("braid", "controller", "run"), ()),
        "gateway": _braid_recipe("braid-gateway", layers, ("braid", "gateway"), ()),
    }


def runtime_recipe(cache: Path, repo: Path) -> ImageRecipe:
    """The Triton runtime (runtime/Dockerfile): tritonserver, Python 3.11, numpy, onnxruntime."""
    base = images.debian_rootfs(cache, list(RUNTIME_PACKAGES))
    deps = pip_layer(
        cache,
        "triton-runtime-deps",
        [["--no-deps", PYTRITON], runtime_requirements(repo)],
    )
    backend = "/opt/tritonserver/backends/python"
    return ImageRecipe(
        name="braid-triton-runtime",
        files=(ImageFile(repo / "runtime" / "tritonserver", "/usr/local/bin/tritonserver", 0o755),),
        base_layers=(base, deps),
        symlinks=(
            ("/opt/tritonserver/bin/tritonserver", f"{_PYTRITON_HOME}/bin/tritonserver"),
            (
                f"{backend}/libtriton_python.so",
                f"{_PYTRITON_HOME}/backends/python/libtriton_python.so",
            ),
            (
                f"{backend}/triton_python_backend_utils.py",
                f"{_PYTRITON_HOME}/backends/python/triton_python_backend_utils.py",
            ),
            (
                f"{backend}/triton_python_backend_stub",
                f"{_PYTRITON_HOME}/python_backend_stubs/3.11/triton_python_backend_stub",
            ),
        ),
        directories=("/tmp", "/models"),
        text_files=_passwd("triton-server", TRITON_UID),
        env=("PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1", "HOME=/tmp"),
        cmd=("tritonserver", "--help"),
        labels={"org.opencontainers.image.source": "braid"},
    )


def all_recipes(cache: Path, repo: Path) -> dict[str, ImageRecipe]:
    """Every image braid runs on a node: the chart's three and the Triton runtime."""
    return {**braid_recipes(cache, repo), "triton-runtime": runtime_recipe(cache, repo)}


def build_all(cache: Path, repo: Path) -> dict[str, BuiltImage]:
    """Build (or find cached) every braid image; each archive is keyed by its content hash."""
    built = {}
    for key, recipe in all_recipes(cache, repo).items():
        built[key] = BuiltImage(recipe, images.build_image(recipe, cache))
    return built
