#!/usr/bin/env bash
# The GPU check: braid's block runtime in a real tritonserver with KIND_GPU instance groups
# (the configs braid renders for a Block on a GPU pool) against KIND_CPU, and braid's gateway
# in front of it; writes gpu_check.json (to $OUT on the device machine, else results/).
#
#   hack/gpu-check.sh prepare     # here, where the package registries answer: the wheels the
#                                 # GPU machine lacks (Python 3.12 builds) into .gpu-wheels/
#   hack/gpu-check.sh run         # on the GPU machine (no network): install them, run the check
#   hack/gpu-check.sh run --cpu-only   # the same check without a GPU (exercises the script)
#
# With the device tool: prepare here, then one run with carry [".gpu-wheels"] and the command
# `bash hack/gpu-check.sh run`. The GPU machines' image has torch, numpy, grpcio, protobuf,
# httpx, uvloop, typer and rich; what braid needs beside them travels as wheels (~54 MB).
# The block runtime is onnxruntime; on a GPU it must be onnxruntime-gpu (the runner refuses a
# KIND_GPU instance without CUDAExecutionProvider). Its wheel is 244 MiB, over the device
# tool's 64 MiB carry, so prepare also cuts it into .gpu-ort/part-00..04 (60 MiB each) with
# its sha256: on one warm machine, four calls carry [".gpu-ort/part-0N"] (N = 0..3, command
# `true`: ignored files already there are kept), then the run call carries [".gpu-wheels",
# ".gpu-ort/part-04", ".gpu-ort/SHA256SUMS"] (56 MB); `run` joins, checks and installs it.
# A GPU machine that reaches PyPI needs none of this: `run` installs it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
ORT_PARTS=.gpu-ort
ORT_GPU=onnxruntime-gpu==1.31.1  # pyproject.toml pins onnxruntime==1.31.1; same build, CUDA EP
# Pinned as in pyproject.toml; pydantic's companions at the versions the venv resolved.
PACKAGES=(
  onnx==1.23.2
  tritonclient==2.73.0
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
  pydantic-settings==2.16.3 python-dotenv==1.2.4
  fastapi==0.163.2 starlette==1.10.0 uvicorn==0.54.0 prometheus-client==0.26.0
)

case "${1:-}" in
  prepare)
    PY="${BRAID_CACHE:-$HOME/.cache/braid}/venv/bin/python"
    rm -rf "$WHEELS"; mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
      --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${PACKAGES[@]}"
    # tritonserver from the nvidia-pytriton wheel (55 MB), slimmed to what the server needs
    # on a Python 3.12 machine (pytriton's own libpython 3.13 and the other stubs stay out),
    # so the carried folder stays under the device tool's 64 MiB.
    "$PY" -m pip download -q --no-deps -d "$WHEELS/full" nvidia-pytriton==0.7.0
    "$PY" - "$WHEELS" <<'PYEOF'
import sys, zipfile
from pathlib import Path
wheels = Path(sys.argv[1])
(full,) = (wheels / "full").glob("nvidia_pytriton-*.whl")
with zipfile.ZipFile(full) as src, zipfile.ZipFile(wheels / "tritonserver-slim.zip", "w", zipfile.ZIP_DEFLATED) as out:
    for item in src.infolist():
        name = item.filename
        keep = name.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))
        drop = "libpython3-" in name or ("python_backend_stubs/" in name and "/3.12/" not in name)
        if keep and not drop:
            out.writestr(item, src.read(name))
PYEOF
    rm -rf "$WHEELS/full"
    rm -rf "$ORT_PARTS"; mkdir -p "$ORT_PARTS/whl"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
      --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$ORT_PARTS/whl" "$ORT_GPU"
    (cd "$ORT_PARTS" && whl=$(ls whl) && sha256sum "whl/$whl" | sed "s|whl/||" > SHA256SUMS \
      && split -b 60M -d "whl/$whl" part- && rm -rf whl)
    exclude=$(git rev-parse --git-path info/exclude)  # .git is a file in a worktree
    mkdir -p "$(dirname "$exclude")"
    for dir in "$WHEELS" "$ORT_PARTS"; do
      grep -qxF "/$dir/" "$exclude" 2>/dev/null || echo "/$dir/" >> "$exclude"
    done
    du -sh "$WHEELS" "$ORT_PARTS"/part-*
    ;;
  run)
    shift
    PY=python3
    VENV_PY="${BRAID_CACHE:-$HOME/.cache/braid}/venv/bin/python"
    if [ -x "$VENV_PY" ]; then
      PY="$VENV_PY"  # a machine with braid's venv (this repository's dev machines)
    elif [ -d "$WHEELS" ]; then
      # The image's torch stays: a venv over the system site-packages adds only the wheels.
      "$PY" -m venv --system-site-packages /tmp/braid-gpu-venv
      /tmp/braid-gpu-venv/bin/python -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
      PY=/tmp/braid-gpu-venv/bin/python
      # The server's tree keeps the wheel's layout (its binary finds its libraries by rpath);
      # braid locates, never imports, the pytriton package.
      site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WHEELS/tritonserver-slim.zip" "$site"
      chmod +x "$site"/pytriton/tritonserver/bin/tritonserver "$site"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
    fi
    # On a GPU machine, onnxruntime-gpu over the CPU onnxruntime (both install the
    # `onnxruntime` package; the GPU build also has the CPU provider). Never elsewhere: on a
    # dev machine it would replace the shared venv's onnxruntime.
    if command -v nvidia-smi >/dev/null; then
      if [ -f "$ORT_PARTS/SHA256SUMS" ]; then
        whl=/tmp/$(cut -d' ' -f3 "$ORT_PARTS/SHA256SUMS")
        cat "$ORT_PARTS"/part-* > "$whl"
        (cd /tmp && sha256sum -c "$OLDPWD/$ORT_PARTS/SHA256SUMS")
        "$PY" -m pip install -q --no-index --no-deps --force-reinstall "$whl"
      else
        "$PY" -m pip install -q --no-deps "$ORT_GPU"  # a GPU machine that reaches PyPI
      fi
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    export OUT="${OUT:-results}"
    "$PY" hack/gpu_check.py --out "$OUT" "$@"
    ;;
  *)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
