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


HOST = """
host:
  name: fmnist-host
  task: another task
  model:
    function: braid.tooling.architectures:fmnist_cnn
    inputShape: [1, 28, 28]
  partition:
    blocks:
      - {name: h0, end: "4"}
      - {name: h1, end: "11"}
      - {name: h2}
"""


def _spec_with_cross(cross: str, host: str = HOST) -> str:
    grid = "paths:\n  exits: [b1]\n  skips: [[b1, b3]]\n"
    return SPEC.replace(grid, f"{grid}  cross: [{cross}]\n") + host


def test_a_host_adds_cross_paths_served_through_its_blocks(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_with_cross("[b0, h1, h1, b3]"))
    out, cache = tmp_path / "repo", tmp_path / "cache"
    args = ["models", "build", "-f", str(spec), "--out", str(out), "--cache-dir", str(cache)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    catalog = read_catalog(out / "catalog.json")
    assert [(m.name, m.role) for m in catalog.models] == [
        ("fmnist-graph", "local"),
        ("fmnist-host", "host"),
    ]
    cross = catalog.path("fmnist-graph/cross/0-fmnist-host:1-1-3/normal")
    assert [h.server for h in cross.hops] == ["local", "host", "host", "host", "local", "local"]
    assert cross.metrics.macs_local < catalog.path(catalog.original_path).metrics.macs_local
    # Every hop of the cross path is a served file, and they chain from image to logits.
    state = fashion_mnist_splits()["test"].images[:8].numpy()
    for hop in cross.hops:
        session = ort.InferenceSession(str(out / hop.triton_model / "1" / "model.onnx"))
        (state,) = session.run(None, {session.get_inputs()[0].name: state})
    assert state.shape == (8, 10)


@pytest.mark.parametrize(
    ("cross", "host", "message"),
    [
        ("[b0, h1, h1, b3]", "", "cross paths need a host"),
        ("[b0, h9, h1, b3]", HOST, "no host block named 'h9'"),
        ("[b3, h1, h1, b0]", HOST, "lin after lout"),
    ],
)
def test_a_bad_cross_path_fails_before_training(
    tmp_path: Path, cross: str, host: str, message: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_with_cross(cross, host))
    cache = tmp_path / "cache"
    args = ["models", "build", "-f", str(spec), "--out", str(tmp_path / "repo")]
    run = CliRunner().invoke(app, [*args, "--cache-dir", str(cache)])
    assert run.exit_code == 1
    assert message in run.output
    assert not cache.exists()
