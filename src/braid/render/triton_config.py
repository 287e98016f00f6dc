"""Render Triton ``config.pbtxt`` files: a pure function of a model's signature.

Triton runs with ``--disable-auto-complete-config`` here, so every config the tooling exports
must be complete on its own (backend, batching, inputs, outputs, instance group). Keeping the
rendering pure lets the exporter, the operator (model-repository ConfigMaps) and the tests
share one definition and compare text without a server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from braid.api.common import TensorSpec
from braid.api.v1alpha1.block import DynamicBatching

# KServe v2 / Triton protocol datatypes -> the config.pbtxt enum. The protocol calls
# strings BYTES while the config calls them TYPE_STRING.
_DATATYPE_TO_CONFIG: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}
_CONFIG_TO_DATATYPE = {v: k for k, v in _DATATYPE_TO_CONFIG.items()}

# Triton accepts more in model names, but these names also become file names, Kubernetes
# object names and Prometheus label values: refusing the rest early avoids three kinds of
# escaping bugs later.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def config_datatype(datatype: str) -> str:
    """The config enum (``TYPE_FP32``) for a protocol datatype (``FP32``) or an enum itself."""
    upper = datatype.upper()
    if upper in _CONFIG_TO_DATATYPE:
        return upper
    try:
        return _DATATYPE_TO_CONFIG[upper]
    except KeyError:
        known = ", ".join(_DATATYPE_TO_CONFIG)
        raise ValueError(f"unknown Triton datatype {datatype!r} (known: {known})") from None


def protocol_datatype(datatype: str) -> str:
    """The protocol datatype (``FP32``) for a config enum or a protocol datatype."""
    return _CONFIG_TO_DATATYPE[config_datatype(datatype)]


def _check_tensor(tensor: TensorSpec) -> None:
    if not _NAME_RE.match(tensor.name):
        raise ValueError(f"tensor name {tensor.name!r} must match {_NAME_RE.pattern}")
    config_datatype(tensor.datatype)
    if not tensor.shape or any(d == 0 or d < -1 for d in tensor.shape):
        # Triton has no empty dims: a per-sample scalar is dims [ 1 ].
        raise ValueError(
            f"tensor {tensor.name!r}: shape must be non-empty, positive or -1, got {tensor.shape}"
        )


DEFAULT_DYNAMIC_BATCHING = DynamicBatching()
_INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO", "KIND_MODEL")


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _render_tensors(section: str, tensors: Sequence[TensorSpec]) -> list[str]:
    lines = [f"{section} ["]
    for index, tensor in enumerate(tensors):
        lines += [
            "  {",
            f"    name: {_quote(tensor.name)}",
            f"    data_type: {config_datatype(tensor.datatype)}",
            f"    dims: {_dims(tensor.shape)}",
            "  }" + ("," if index < len(tensors) - 1 else ""),
        ]
    lines.append("]")
    return lines


def render_model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    *,
    backend: str = "python",
    dynamic_batching: DynamicBatching | None = DEFAULT_DYNAMIC_BATCHING,
    instance_count: int = 1,
    instance_kind: str = "KIND_CPU",
    parameters: Mapping[str, str] | None = None,
) -> str:
    """The text of a complete ``config.pbtxt``.

    Tensors are the API's ``TensorSpec`` (shape without the batch dimension, as Triton's
    ``dims`` when ``max_batch_size > 0``) and batching is the ``Block`` API's
    ``DynamicBatching``, so a Model/Block spec renders without translation.

    ``dynamic_batching`` applies only to batching models (``max_batch_size > 0``; a model
    that does not batch has nothing to batch, so it is left out there); pass ``None`` to
    turn it off. ``parameters`` reach the backend (the Python backend's ``model.py`` reads
    them from ``args["model_config"]``), sorted so the output is stable.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} must match {_NAME_RE.pattern}")
    if max_batch_size < 0:
        raise ValueError(f"max_batch_size must be >= 0, got {max_batch_size}")
    if not inputs or not outputs:
        raise ValueError(f"model {name!r} needs at least one input and one output")
    seen: set[str] = set()
    for tensor in (*inputs, *outputs):
        _check_tensor(tensor)
        if tensor.name in seen:
            raise ValueError(f"model {name!r}: tensor name {tensor.name!r} used twice")
        seen.add(tensor.name)
    if instance_kind not in _INSTANCE_KINDS:
        raise ValueError(f"instance kind {instance_kind!r} not in {_INSTANCE_KINDS}")
    if instance_count < 1:
        raise ValueError(f"instance count must be >= 1, got {instance_count}")
    batching = max_batch_size > 0
    if batching and dynamic_batching is not None:
        too_big = [b for b in dynamic_batching.preferred_batch_sizes if b > max_batch_size]
        if too_big:
            raise ValueError(
                f"model {name!r}: preferred batch sizes {too_big} exceed max_batch_size "
                f"{max_batch_size}"
            )

    lines = [
        f"name: {_quote(name)}",
        f"backend: {_quote(backend)}",
        f"max_batch_size: {max_batch_size}",
        *_render_tensors("input", inputs),
        *_render_tensors("output", outputs),
    ]
    if batching and dynamic_batching is not None:
        lines.append("dynamic_batching {")
        if dynamic_batching.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: {_dims(dynamic_batching.preferred_batch_sizes)}")
        lines.append(
            f"  max_queue_delay_microseconds: {dynamic_batching.max_queue_delay_microseconds}"
        )
        lines.append("}")
    lines += [
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {instance_kind}",
        "  }",
        "]",
    ]
    for key in sorted(parameters or {}):
        value = (parameters or {})[key]
        lines += [
            "parameters {",
            f"  key: {_quote(key)}",
            f"  value: {{ string_value: {_quote(value)} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def render_ensemble_config(
    name: str,
    steps: Sequence[tuple[str, str, str]],
    input: TensorSpec,
    output: TensorSpec,
    max_batch_size: int,
) -> str:
    """The ``config.pbtxt`` of a Triton ensemble that chains single-input, single-output models.

    ``steps`` are ``(model, its input name, its output name)`` in order; the ensemble's
    ``input`` feeds the first step and the last step's output is the ensemble's ``output``.
    The gateway's benchmark compares its path execution against exactly this: the same blocks
    chained inside Triton, with no client round trip between them.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} must match {_NAME_RE.pattern}")
    if not steps:
        raise ValueError(f"ensemble {name!r} needs at least one step")
    _check_tensor(input)
    _check_tensor(output)
    lines = [
        f"name: {_quote(name)}",
        'platform: "ensemble"',
        f"max_batch_size: {max_batch_size}",
        *_render_tensors("input", [input]),
        *_render_tensors("output", [output]),
        "ensemble_scheduling {",
        "  step [",
    ]
    for index, (model, step_input, step_output) in enumerate(steps):
        source = input.name if index == 0 else f"_step{index - 1}"
        target = output.name if index == len(steps) - 1 else f"_step{index}"
        lines += [
            "    {",
            f"      model_name: {_quote(model)}",
            "      model_version: -1",
            f"      input_map {{ key: {_quote(step_input)} value: {_quote(source)} }}",
            f"      output_map {{ key: {_quote(step_output)} value: {_quote(target)} }}",
            "    }" + ("," if index < len(steps) - 1 else ""),
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"
