"""Protocol-neutral requests and responses, and the checks every input passes before a hop.

Both front ends decode into these types and encode from them, so the executor never knows
which protocol a request came in on. Tensor data is kept as the raw little-endian bytes the
KServe v2 binary extension and gRPC's ``raw_input_contents`` carry: the gateway forwards them
to Triton as they are and only looks inside where it must (an exit head's logits, a per-sample
split), through zero-copy numpy views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from braid.api.common import TensorSpec
from braid.dataplane.errors import InferenceError, Reason, bad_request

# Bytes per element of every fixed-size KServe v2 datatype; BYTES is variable-length.
DATATYPE_SIZE: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "BF16": 2,
    "FP32": 4,
    "FP64": 8,
}

# numpy views of the wire format (little-endian, as the protocol specifies). BF16 has no
# numpy type: it is forwarded as bytes but cannot be read as numbers here.
NUMPY_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


@dataclass(slots=True)
class Tensor:
    """A named tensor on the wire: datatype, full shape (batch first) and raw bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes

    def numpy(self) -> np.ndarray[Any, Any]:
        """A read-only view of the data with the tensor's shape (no copy)."""
        dtype = NUMPY_DTYPE.get(self.datatype)
        if dtype is None:
            raise bad_request(f"tensor {self.name!r}: datatype {self.datatype} has no numpy view")
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape)


@dataclass(slots=True)
class InferRequest:
    """One inference request, whatever protocol brought it."""

    model: str
    inputs: list[Tensor]
    id: str = ""
    version: str = ""
    requested_outputs: list[str] | None = None
    """Output names the client asked for; ``None`` means every output."""
    path: str | None = None
    """A path id the client pinned (parameter ``braid_path``); ``None`` lets the table choose."""
    timeout_s: float | None = None
    """The client's time budget from arrival (gRPC deadline, REST header or ``timeout``)."""


@dataclass(slots=True)
class InferResponse:
    """The result of one request and how it was served."""

    model: str
    outputs: list[Tensor]
    path: str
    """The path the request was routed to (the one the table or the client chose)."""
    id: str = ""
    version: str = "1"
    served_by: str = ""
    """The path that produced the outputs: ``path``, or the fallback path when one was used."""
    exits: int = 0
    """Samples that left through an early-exit head."""
    fallback: str | None = None
    """Why the request fell back to the fallback path (``None``: it did not)."""
    parameters: dict[str, Any] = field(default_factory=dict)

    def response_parameters(self) -> dict[str, str | int | bool]:
        """What a client reads to learn which path served it (both protocols send these)."""
        out: dict[str, str | int | bool] = {"braid_path": self.served_by or self.path}
        if self.served_by and self.served_by != self.path:
            out["braid_routed_path"] = self.path
        if self.exits:
            out["braid_exits"] = self.exits
        if self.fallback is not None:
            out["braid_fallback"] = self.fallback
        return out


@dataclass(frozen=True)
class ModelSignature:
    """What the gateway publishes about a model (KServe v2 model metadata)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def expected_byte_size(datatype: str, shape: Sequence[int]) -> int | None:
    """Bytes a tensor of fixed-size ``datatype`` and ``shape`` has; ``None`` for BYTES."""
    size = DATATYPE_SIZE.get(datatype)
    return None if size is None else size * element_count(shape)


def validate_input(tensor: Tensor, spec: TensorSpec, max_batch_size: int) -> int:
    """Check one input against the model's signature; returns its batch size.

    Everything a hop would refuse is refused here, before any server is called, so a bad
    request costs no compute and gets a 4xx that names the problem instead of an upstream
    error from the middle of a path.
    """
    if tensor.datatype != spec.datatype:
        raise bad_request(
            f"input {tensor.name!r}: datatype {tensor.datatype}, the model expects {spec.datatype}"
        )
    want = len(spec.shape) + 1
    if len(tensor.shape) != want:
        raise bad_request(
            f"input {tensor.name!r}: shape {list(tensor.shape)} has {len(tensor.shape)} dims, "
            f"the model expects {want} ([batch, {', '.join(map(str, spec.shape))}])"
        )
    batch, *dims = tensor.shape
    if batch < 1 or (max_batch_size > 0 and batch > max_batch_size):
        raise bad_request(
            f"input {tensor.name!r}: batch size {batch} is outside 1..{max_batch_size}"
        )
    for got, expected in zip(dims, spec.shape, strict=True):
        if got < 1 or (expected != -1 and got != expected):
            raise bad_request(
                f"input {tensor.name!r}: shape {list(tensor.shape)} does not match "
                f"[batch, {', '.join(map(str, spec.shape))}]"
            )
    size = expected_byte_size(tensor.datatype, tensor.shape)
    if size is not None and len(tensor.data) != size:
        raise bad_request(
            f"input {tensor.name!r}: {len(tensor.data)} bytes of data, shape "
            f"{list(tensor.shape)} of {tensor.datatype} needs {size}"
        )
    return batch


def validate_request(
    request: InferRequest,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch: int,
) -> int:
    """Check a request's inputs and requested outputs; returns the batch size."""
    by_name = {t.name: t for t in request.inputs}
    if len(by_name) != len(request.inputs):
        raise bad_request("an input is given twice")
    expected = {s.name for s in inputs}
    unknown = sorted(set(by_name) - expected)
    missing = sorted(expected - set(by_name))
    if unknown or missing:
        raise bad_request(
            f"model {request.model!r} takes inputs {sorted(expected)}"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    batches = {validate_input(by_name[s.name], s, max_batch) for s in inputs}
    if len(batches) != 1:
        raise bad_request(f"inputs disagree on the batch size: {sorted(batches)}")
    if request.requested_outputs is not None:
        known = {s.name for s in outputs}
        bad = sorted(set(request.requested_outputs) - known)
        if bad:
            raise bad_request(
                f"model {request.model!r} has no outputs {bad} (it has {sorted(known)})"
            )
    return batches.pop()


def max_softmax(logits: bytes, datatype: str, batch: int) -> np.ndarray[Any, Any]:
    """Per-sample max-softmax confidence of a batch of logits, computed stably.

    max_j softmax(x)_j = 1 / sum_j exp(x_j - max x): one exp per logit, no division per class.
    """
    dtype = NUMPY_DTYPE.get(datatype)
    if dtype is None or dtype.kind != "f":
        raise InferenceError(
            Reason.INTERNAL, f"an exit head must produce floating-point logits, got {datatype}"
        )
    x = np.frombuffer(logits, dtype=dtype).reshape(batch, -1).astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    result: np.ndarray[Any, Any] = 1.0 / np.exp(shifted).sum(axis=1)
    return result


def take_rows(data: bytes, batch: int, rows: np.ndarray[Any, Any]) -> bytes:
    """The samples ``rows`` (indices along the batch dimension) of a batch of raw tensors."""
    view = np.frombuffer(data, dtype=np.uint8).reshape(batch, -1)
    picked: bytes = view[rows].tobytes()
    return picked


def scatter_rows(parts: Sequence[tuple[np.ndarray[Any, Any], bytes]], batch: int) -> bytes:
    """Reassemble a batch from ``(row indices, their samples' bytes)`` parts, in order."""
    row_bytes = None
    for rows, data in parts:
        if len(rows):
            row_bytes = len(data) // len(rows)
            break
    if row_bytes is None:
        return b""
    out = np.empty((batch, row_bytes), dtype=np.uint8)
    for rows, data in parts:
        if len(rows):
            if len(data) != row_bytes * len(rows):
                raise InferenceError(
                    Reason.UPSTREAM_ERROR, "paths of one batch returned outputs of different sizes"
                )
            out[rows] = np.frombuffer(data, dtype=np.uint8).reshape(len(rows), row_bytes)
    merged: bytes = out.tobytes()
    return merged
