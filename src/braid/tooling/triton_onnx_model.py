"""Triton Python-backend ``model.py`` that serves one ONNX file with onnxruntime.

This file is copied verbatim into ``<repository>/<model>/<version>/model.py`` by
``braid.tooling.triton_repository``; it runs inside Triton's Python stub, never inside
braid, so it depends only on numpy, onnxruntime and ``triton_python_backend_utils``. It
never imports torch: the Triton runtime image has no torch (see the repository module).

Why the Python backend and not Triton's native onnxruntime backend: the ``tritonserver``
that runs on CPU here (from the nvidia-pytriton wheel) ships only the Python backend. The
same ``model.onnx`` serves unchanged under ``backend: "onnxruntime"`` where a Triton image
has that backend. The model's signature comes from ``config.pbtxt`` (passed in
``args["model_config"]``), so one file serves every block, link and exit head: the ONNX
graph's inputs and outputs carry the config's tensor names.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    params = config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


def instance_providers(
    args: dict[str, str], available: list[str]
) -> list[str | tuple[str, dict[str, Any]]]:
    """The execution providers for the device Triton gave this instance.

    A KIND_GPU instance (the operator renders KIND_GPU on GPU pools) runs on CUDA device
    ``model_instance_device_id``; an onnxruntime without the CUDA provider (the CPU wheel
    where ``onnxruntime-gpu`` was meant) is an error, never a silent fall back to the CPU
    while the pod holds a GPU. The CPU provider is listed after CUDA only for the few ops
    the CUDA provider lacks, as onnxruntime's documentation does.
    """
    if args.get("model_instance_kind") == "GPU":
        if CUDA_PROVIDER not in available:
            raise RuntimeError(
                "Triton placed this instance on a GPU but onnxruntime offers no "
                f"{CUDA_PROVIDER} (available: {', '.join(available)}); install onnxruntime-gpu"
            )
        device = int(args.get("model_instance_device_id", "0"))
        return [(CUDA_PROVIDER, {"device_id": device}), CPU_PROVIDER]
    return [CPU_PROVIDER]


def check_session_device(asked: list[str | tuple[str, dict[str, Any]]], got: list[str]) -> None:
    """Refuse a session that dropped the CUDA provider it was asked for.

    onnxruntime logs and falls back to the CPU when the CUDA provider cannot load (CUDA 13
    or cuDNN 9 libraries missing: onnxruntime-gpu's ``[cuda,cudnn]`` extras or the image's
    CUDA provide them); on a GPU instance that would serve from the CPU unnoticed.
    """
    wanted = {p if isinstance(p, str) else p[0] for p in asked}
    if CUDA_PROVIDER in wanted and CUDA_PROVIDER not in got:
        raise RuntimeError(
            f"onnxruntime could not start {CUDA_PROVIDER} for this GPU instance (session "
            f"providers: {', '.join(got)}); are the CUDA 13 and cuDNN 9 libraries installed?"
        )


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """One intra-op thread by default: Triton already runs instances (``instance_count``)
    and requests in parallel, and onnxruntime's default (a thread per core, per session)
    would oversubscribe a small CPU from every instance at once and spin idle threads.
    Parallelism comes from instances; the count is a config parameter to raise for a
    single-instance model on a large CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class TritonPythonModel:
    """Triton calls ``initialize`` once per instance, ``execute`` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        path = os.path.join(
            args["model_repository"],
            args["model_version"],
            params.get("onnx_file", "model.onnx"),
        )
        providers = instance_providers(args, ort.get_available_providers())
        self.session = ort.InferenceSession(
            path,
            sess_options=session_options(int(params.get("intra_op_threads", "1"))),
            providers=providers,
        )
        check_session_device(providers, self.session.get_providers())
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.outputs = [
            (tensor["name"], pb_utils.triton_string_to_numpy(tensor["data_type"]))
            for tensor in config["output"]
        ]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.input_names if n not in graph_inputs] + [
            n for n, _ in self.outputs if n not in graph_outputs
        ]
        if missing:
            raise ValueError(f"{path} has no tensors named {missing} (config.pbtxt declares them)")

    def _run(self, inputs: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        results = self.session.run([name for name, _ in self.outputs], feeds)
        return [
            np.asarray(r).astype(dtype, copy=False)
            for r, (_, dtype) in zip(results, self.outputs, strict=True)
        ]

    def _inputs(self, request: Any) -> list[np.ndarray[Any, Any]]:
        return [
            pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names
        ]

    def _response(self, arrays: list[np.ndarray[Any, Any]]) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(array))
                for (name, _), array in zip(self.outputs, arrays, strict=True)
            ]
        )

    def _execute_one(self, request: Any) -> Any:
        try:
            return self._response(self._run(self._inputs(request)))
        except Exception as exc:  # any failure becomes this request's error status
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run the dynamic batcher's requests as one session run when their shapes allow.

        The Python backend hands a batch over as separate requests; concatenating them
        along the batch dimension is what makes dynamic batching pay off. Requests whose
        shapes differ (variable dims) or a failing batch fall back to one run each, so one
        bad request fails alone.
        """
        if not self.batching or len(requests) == 1:
            return [self._execute_one(request) for request in requests]
        try:
            per_request = [self._inputs(request) for request in requests]
            sizes = [arrays[0].shape[0] for arrays in per_request]
            stacked = [
                np.concatenate([arrays[i] for arrays in per_request], axis=0)
                for i in range(len(self.input_names))
            ]
            outputs = self._run(stacked)
            if any(out.shape[0] != sum(sizes) for out in outputs):
                raise ValueError("outputs do not keep the batch dimension")
        except Exception:  # retried one by one, so a bad request fails alone
            return [self._execute_one(request) for request in requests]
        responses = []
        start = 0
        for size in sizes:
            responses.append(self._response([out[start : start + size] for out in outputs]))
            start += size
        return responses
