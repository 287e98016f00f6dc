"""``braid models build -f spec.yaml`` end to end on a model given as ``module:function``.

The built-in CNN comes in through the graph splitter with cuts named by module path,
trained briefly from its spec, with one skip link and one exit head; the test checks what
a user sees: the Triton repository and catalog, the choice made on the validation split,
the served blocks chaining to the catalog's baseline, and an error before training for a
bad spec (no cache file written).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from braid.cli import app
from braid.tooling.data import fashion_mnist_splits
from braid.tooling.export import read_catalog

pytestmark = pytest.mark.integration

SPEC = """
name: fmnist-graph
task: fashion-mnist
model:
  function: braid.tooling.architectures:fmnist_cnn
  inputShape: [1, 28, 28]
dataset:
  loader: braid.tooling.data:fashion_mnist_splits
partition:
  blocks:
    - {name: b0, end: "4"}
    - {name: b1, end: "8"}
    - {name: b2, end: "11"}
    - {name: b3, end: "18"}
    - {name: b4}
paths:
  exits: [b1]
  skips: [[b1, b3]]
train: {epochs: 1, samples: 3000, linkSamples: 1000, linkEpochs: 1, augment: true}
"""


def test_build_from_a_spec_exports_served_blocks_and_selects_on_validation(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out, results, cache = tmp_path / "repo", tmp_path / "results.json", tmp_path / "cache"
    args = ["models", "build", "-f", str(spec), "--out", str(out), "--results", str(results)]
    run = CliRunner().invoke(app, [*args, "--cache-dir", str(cache)])
    assert run.exit_code == 0, run.output
    catalog = read_catalog(out / "catalog.json")
    assert {p.id for p in catalog.paths} == {
        "fmnist-graph/original",
        "fmnist-graph/skip/1-3/normal",
        "fmnist-graph/exit/1",
    }
    model = catalog.models[0]
    assert [b.name for b in model.partition.blocks] == ["b0", "b1", "b2", "b3", "b4"]
    summary = json.loads(results.read_text())
    assert summary["selection_split"] == "validation"
    assert summary["chosen_path"]["path"] in {p.id for p in catalog.paths}
    drop = (
        summary["baseline"]["validation_accuracy"] - summary["chosen_path"]["validation_accuracy"]
    )
    assert 100 * drop <= summary["max_accuracy_drop_pt"] + 1e-9

    # The served files of the original path classify the test set as the catalog says.
    test = fashion_mnist_splits()["test"]
    x = test.images[:2000]
    blocks = [
        ort.InferenceSession(str(out / b.triton_model / "1" / "model.onnx")) for b in model.blocks
    ]
    state = x.numpy()
    for block in blocks:
        (state,) = block.run(None, {block.get_inputs()[0].name: state})
    served = float((state.argmax(1) == test.labels[:2000].numpy()).mean())
    assert abs(served - catalog.baseline_accuracy) < 0.02


def test_a_bad_cut_fails_before_training_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace('end: "8"', "end: layer8"))
    cache = tmp_path / "cache"
    run = CliRunner().invoke(
        app,
        [
            "models",
            "build",
            "-f",
            str(spec),
            "--out",
            str(tmp_path / "repo"),
            "--cache-dir",
            str(cache),
        ],
    )
    assert run.exit_code == 1
    assert "no layer or module named 'layer8'" in run.output
    assert not cache.exists()
    assert not (tmp_path / "repo").exists()
