"""config.pbtxt rendering: complete, stable text that Triton accepts without auto-complete."""

from __future__ import annotations

import pytest

from braid.api.common import TensorSpec
from braid.api.v1alpha1.block import DynamicBatching
from braid.render.triton_config import config_datatype, protocol_datatype, render_model_config

IMAGE = TensorSpec(name="IMAGE", datatype="FP32", shape=[3, 28, 28])
LOGITS = TensorSpec(name="LOGITS", datatype="FP32", shape=[10])
FEATURES = TensorSpec(name="FEATURES", datatype="FP16", shape=[-1, 64])

EXPECTED = """\
name: "fmnist-cnn.b0"
backend: "python"
max_batch_size: 16
input [
  {
    name: "IMAGE"
    data_type: TYPE_FP32
    dims: [ 3, 28, 28 ]
  }
]
output [
  {
    name: "LOGITS"
    data_type: TYPE_FP32
    dims: [ 10 ]
  },
  {
    name: "FEATURES"
    data_type: TYPE_FP16
    dims: [ -1, 64 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 250
}
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
parameters {
  key: "a_first"
  value: { string_value: "x" }
}
parameters {
  key: "intra_op_threads"
  value: { string_value: "1" }
}
"""


def test_full_config_renders_exactly() -> None:
    text = render_model_config(
        "fmnist-cnn.b0",
        [IMAGE],
        [LOGITS, FEATURES],
        max_batch_size=16,
        dynamic_batching=DynamicBatching(
            preferred_batch_sizes=[4, 8], max_queue_delay_microseconds=250
        ),
        instance_count=2,
        parameters={"intra_op_threads": "1", "a_first": "x"},
    )
    assert text == EXPECTED


def test_default_batches_dynamically_with_the_api_default_delay() -> None:
    text = render_model_config("m", [IMAGE], [LOGITS], max_batch_size=8)
    assert "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}" in text
    assert "preferred_batch_size" not in text
    assert "parameters" not in text


@pytest.mark.parametrize(
    ("max_batch_size", "batching"), [(0, DynamicBatching()), (8, None), (0, None)]
)
def test_no_batcher_without_batching_or_when_turned_off(
    max_batch_size: int, batching: DynamicBatching | None
) -> None:
    text = render_model_config(
        "m", [IMAGE], [LOGITS], max_batch_size=max_batch_size, dynamic_batching=batching
    )
    assert "dynamic_batching" not in text
    assert f"max_batch_size: {max_batch_size}\n" in text


def test_gpu_instances_and_other_backends() -> None:
    text = render_model_config(
        "m", [IMAGE], [LOGITS], 4, backend="onnxruntime", instance_kind="KIND_GPU"
    )
    assert 'backend: "onnxruntime"' in text
    assert "kind: KIND_GPU" in text


def test_parameter_values_are_escaped() -> None:
    text = render_model_config("m", [IMAGE], [LOGITS], 4, parameters={"p": 'a "b" \\ c'})
    assert 'value: { string_value: "a \\"b\\" \\\\ c" }' in text


def test_bytes_tensors_are_type_string() -> None:
    text = render_model_config(
        "m", [TensorSpec(name="TEXT", datatype="BYTES", shape=[1])], [LOGITS], 4
    )
    assert "data_type: TYPE_STRING" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "model name"),
        ({"name": "../escape"}, "model name"),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"inputs": []}, "at least one input"),
        ({"outputs": [IMAGE]}, "used twice"),
        ({"inputs": [TensorSpec(name="X", datatype="FP32", shape=[0])]}, "shape"),
        ({"inputs": [TensorSpec(name="X", datatype="FP32", shape=[-2])]}, "shape"),
        ({"instance_kind": "KIND_TPU"}, "instance kind"),
        ({"instance_count": 0}, "instance count"),
        (
            {"dynamic_batching": DynamicBatching(preferred_batch_sizes=[64])},
            "exceed max_batch_size",
        ),
    ],
)
def test_invalid_configs_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "name": "m",
        "inputs": [IMAGE],
        "outputs": [LOGITS],
        "max_batch_size": 8,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        render_model_config(**args)  # type: ignore[arg-type]


def test_datatype_names_map_both_ways() -> None:
    assert config_datatype("fp32") == "TYPE_FP32"
    assert config_datatype("TYPE_INT64") == "TYPE_INT64"
    assert protocol_datatype("TYPE_STRING") == "BYTES"
    with pytest.raises(ValueError, match="unknown Triton datatype"):
        config_datatype("FLOAT")


def test_ensemble_chains_steps_through_internal_tensors() -> None:
    from braid.render.triton_config import render_ensemble_config

    text = render_ensemble_config(
        "m.ensemble",
        [("m.b0", "INPUT__0", "OUTPUT__0"), ("m.b1", "INPUT__0", "OUTPUT__0")],
        IMAGE,
        LOGITS,
        8,
    )
    assert 'platform: "ensemble"' in text
    assert text.count("model_name:") == 2
    assert 'input_map { key: "INPUT__0" value: "IMAGE" }' in text
    assert 'output_map { key: "OUTPUT__0" value: "_step0" }' in text
    assert 'input_map { key: "INPUT__0" value: "_step0" }' in text
    assert 'output_map { key: "OUTPUT__0" value: "LOGITS" }' in text
    with pytest.raises(ValueError, match="at least one step"):
        render_ensemble_config("m.ensemble", [], IMAGE, LOGITS, 8)
