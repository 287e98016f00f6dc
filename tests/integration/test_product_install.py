"""The product installs and imports on its own: ``pip install .`` without extras.

The wheel holds only the ``braid`` package (the rig, tests and benchmarks stay out), and
every module in it imports with the dev-only packages (``braid_dev``, the fuzzers' and the
test runner's libraries) made unimportable, the way they are on a user's machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Triton's Python backend loads these as model.py inside tritonserver's stub, the only place
# where triton_python_backend_utils exists; they ship as files for the model repository.
RUNS_INSIDE_TRITON = ("braid.tooling.triton_onnx_model",)
# ``python -m braid.cli``: importing it runs the command line.
ENTRY_SCRIPTS = ("braid.cli.__main__",)
DEV_ONLY = ("braid_dev", "schemathesis", "hypothesis", "pytest", "_pytest", "mypy", "importlinter")

# Runs in a fresh interpreter started with -S: no .pth file runs, so no editable install
# (of braid or braid_dev) can slip in; the wheel's copy and the third-party packages are all
# it sees. A meta-path finder refuses the dev-only packages by name.
IMPORT_ALL = """
import importlib, importlib.abc, pkgutil, sys
sys.path[:0] = {paths!r}
DEV_ONLY = {dev_only!r}

class RefuseDevOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in DEV_ONLY:
            raise ModuleNotFoundError(f"{{name}} is dev-only", name=name)
        return None

sys.meta_path.insert(0, RefuseDevOnly())
import braid
assert braid.__file__.startswith({target!r}), braid.__file__
names = [m.name for m in pkgutil.walk_packages(braid.__path__, "braid.")]
for name in names:
    if name not in {inside!r}:
        importlib.import_module(name)
print(len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what the sdist holds: setuptools leaves build/ in the source tree,
    # and a stale build/ could put modules that no longer exist into the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=600,
    )
    (built,) = out.glob("braid-*.whl")
    return built


def test_wheel_holds_the_product_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("braid-")}
    assert top == {"braid"}
    assert "braid/py.typed" in names
    assert not any("test" in n.split("/")[-1] for n in names if n.endswith(".py")), names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed alone into a folder of its own (what ``pip install .`` puts in
    site-packages), without its dependencies: they come from the venv's site-packages."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    return target


def _run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter without site processing (no editable installs)."""
    return subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300
    )


def test_every_product_module_imports_without_the_rig(installed: Path) -> None:
    site = sysconfig.get_paths()["purelib"]
    code = IMPORT_ALL.format(
        paths=[str(installed), site],
        dev_only=DEV_ONLY,
        target=str(installed),
        inside=RUNS_INSIDE_TRITON + ENTRY_SCRIPTS,
    )
    done = _run_isolated(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip().splitlines()[-1]) > 50


def test_cli_without_the_rig_has_the_product_commands(installed: Path) -> None:
    code = (
        f"import sys; sys.path[:0] = [{str(installed)!r}, {sysconfig.get_paths()['purelib']!r}]\n"
        "import importlib.abc\n"
        "class R(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'braid_dev': raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, R())\n"
        "from braid.cli import app\n"
        "app(['--help'], prog_name='braid')\n"
    )
    done = _run_isolated(code)
    assert done.returncode == 0, done.stderr[-3000:]
    for command in ("models", "dimee", "controller", "gateway"):
        assert command in done.stdout
