"""Triton Python-backend ``model.py`` that serves one TorchScript file.

This file is copied verbatim into ``<repository>/<model>/<version>/model.py`` by
``braid.tooling.triton_repository``; it runs inside Triton's Python stub, never inside
braid, so it depends only on torch, numpy and ``triton_python_backend_utils``.

Why the Python backend and not Triton's libtorch backend: the ``tritonserver`` that runs on
CPU here (from the nvidia-pytriton wheel) ships only the Python backend. The model's
signature comes from ``config.pbtxt`` (passed in ``args["model_config"]``), so one file
serves every block, link and exit head: inputs are passed to the module positionally in
config order, outputs are taken from a tensor, a tuple/list (config order) or a dict (by
name).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    params = config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


def instance_device(args: dict[str, str]) -> torch.device:
    """The device Triton gave this instance: ``cuda:<id>`` for a KIND_GPU instance group
    (the operator renders KIND_GPU on GPU pools), the CPU otherwise."""
    if args.get("model_instance_kind") == "GPU":
        if not torch.cuda.is_available():
            raise RuntimeError("Triton placed this instance on a GPU but torch sees no CUDA device")
        return torch.device("cuda", int(args.get("model_instance_device_id", "0")))
    return torch.device("cpu")


class TritonPythonModel:
    """Triton calls ``initialize`` once per instance, ``execute`` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        # One intra-op thread by default: Triton already runs instances and requests in
        # parallel, and on a small CPU torch's default (one thread per core) per instance
        # oversubscribes the cores and makes every call slower.
        torch.set_num_threads(int(params.get("torch_num_threads", "1")))
        path = os.path.join(
            args["model_repository"],
            args["model_version"],
            params.get("torchscript_file", "model.pt"),
        )
        self.device = instance_device(args)
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but is the artifact format here.
            warnings.filterwarnings("ignore", category=FutureWarning)
            self.module = torch.jit.load(path, map_location=self.device)  # type: ignore[no-untyped-call]
        self.module.eval()
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.outputs = [
            (tensor["name"], pb_utils.triton_string_to_numpy(tensor["data_type"]))
            for tensor in config["output"]
        ]

    def _run(self, inputs: list[torch.Tensor]) -> list[np.ndarray[Any, Any]]:
        with torch.inference_mode():
            result = self.module(*(t.to(self.device, non_blocking=True) for t in inputs))
        if isinstance(result, dict):
            tensors = [result[name] for name, _ in self.outputs]
        elif isinstance(result, list | tuple):
            tensors = list(result)
        else:
            tensors = [result]
        if len(tensors) != len(self.outputs):
            raise ValueError(
                f"module returned {len(tensors)} tensors, config declares {len(self.outputs)}"
            )
        return [
            t.detach().cpu().numpy().astype(dtype, copy=False)
            for t, (_, dtype) in zip(tensors, self.outputs, strict=True)
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
            tensors = [torch.from_numpy(np.array(a)) for a in self._inputs(request)]
            return self._response(self._run(tensors))
        except Exception as exc:  # any failure becomes this request's error status
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run the dynamic batcher's requests as one forward pass when their shapes allow.

        The Python backend hands a batch over as separate requests; concatenating them
        along the batch dimension is what makes dynamic batching pay off. Requests whose
        shapes differ (variable dims) or a failing batch fall back to one pass each, so one
        bad request fails alone.
        """
        if not self.batching or len(requests) == 1:
            return [self._execute_one(request) for request in requests]
        try:
            per_request = [self._inputs(request) for request in requests]
            sizes = [arrays[0].shape[0] for arrays in per_request]
            stacked = [
                torch.from_numpy(np.concatenate([arrays[i] for arrays in per_request], axis=0))
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
