"""The OpenAPI document of the gateway's infer routes, which FastAPI cannot derive by itself.

The infer routes read the raw ``Request`` (a pydantic body would parse tensors as JSON, the
cost the binary extension exists to avoid), so FastAPI sees no body, no headers and no
answers there. This module writes that part of the document by hand from the KServe v2
protocol and the served models' signatures: the JSON body, the binary form with its
``Inference-Header-Content-Length`` header, the time-budget and compression headers, and
every status the gateway answers with. Clients read it to learn the protocol; fuzzers
(schemathesis) read it to generate requests that reach the decoder instead of a 404.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from braid.dataplane.tensors import DATATYPE_SIZE, ModelSignature

HEADER_LENGTH = "Inference-Header-Content-Length"
TIMEOUT_HEADER = "braid-timeout-ms"
"""Client time budget in ms (REST has no deadline of its own; gRPC uses its deadline)."""
PATH_PARAMETER = "braid_path"
DATATYPES = [*DATATYPE_SIZE, "BYTES"]

_REF = "#/components/schemas/"

SCHEMAS: dict[str, dict[str, Any]] = {
    "InferInputTensor": {
        "type": "object",
        "description": "One input: its values in `data`, or `parameters.binary_data_size` "
        "bytes of the binary part of the body (binary tensor data extension).",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "datatype": {"type": "string", "enum": DATATYPES},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "description": "Full shape, batch dimension first.",
            },
            "data": {
                "type": "array",
                "items": {},
                "description": "Values in row-major order (flat or nested).",
            },
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
    },
    "InferRequestedOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "parameters": {
                "type": "object",
                "properties": {"binary_data": {"type": "boolean"}},
            },
        },
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    PATH_PARAMETER: {
                        "type": "string",
                        "description": "Pin the request to this path id (default: the "
                        "routing table chooses).",
                    },
                    "timeout": {
                        "type": "integer",
                        "exclusiveMinimum": 0,
                        "description": "Time budget in microseconds (Triton's parameter).",
                    },
                    "binary_data_output": {"type": "boolean"},
                },
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": f"{_REF}InferInputTensor"},
            },
            "outputs": {"type": "array", "items": {"$ref": f"{_REF}InferRequestedOutput"}},
        },
    },
    "InferOutputTensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": DATATYPES},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array", "items": {}},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "description": "`braid_path` (the path that served it), `braid_routed_path`, "
                "`braid_exits`, `braid_fallback`.",
            },
            "outputs": {"type": "array", "items": {"$ref": f"{_REF}InferOutputTensor"}},
        },
    },
    "InferenceError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "string",
                "description": "`reason: message`; the reason is the `reason` label of "
                "braid_gateway_errors_total.",
            }
        },
    },
}

_ERRORS = {
    "400": "Malformed body or header, wrong input name, datatype, shape or byte size, "
    "truncated binary data, unknown path.",
    "404": "Unknown model or version.",
    "408": "The body did not fully arrive in time (a stalled or trickled upload).",
    "413": "The body (or what it inflates to) is over the gateway's limit.",
    "415": "A Content-Encoding the gateway cannot read.",
    "502": "A Triton server behind the gateway answered with an error.",
    "503": "No path can serve the request: the servers it needs are unavailable.",
    "504": "The time budget ran out before the path finished.",
}


def _example_request(signature: ModelSignature) -> dict[str, Any]:
    """A valid JSON request of zeros for ``signature`` (batch of one)."""
    spec = signature.inputs[0]
    shape = [1, *(d if d > 0 else 1 for d in spec.shape)]
    count = math.prod(shape)
    value: Any = False if spec.datatype == "BOOL" else 0
    return {
        "id": "example",
        "inputs": [
            {"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": [value] * count}
        ],
        "outputs": [{"name": o.name} for o in signature.outputs],
    }


def _operation(signatures: Mapping[str, ModelSignature], versioned: bool) -> dict[str, Any]:
    models = sorted(signatures)
    versions = sorted({v for s in signatures.values() for v in s.versions})
    parameters: list[dict[str, Any]] = [
        {
            "name": "model",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": models} if models else {"type": "string"},
        }
    ]
    if versioned:
        parameters.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": versions} if versions else {"type": "string"},
            }
        )
    parameters += [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Length of the JSON header; the inputs' binary data follows it.",
            "schema": {"type": "integer", "minimum": 0},
        },
        {
            "name": TIMEOUT_HEADER,
            "in": "header",
            "required": False,
            "description": "The client's time budget in milliseconds.",
            "schema": {"type": "number", "exclusiveMinimum": 0},
        },
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["identity", "gzip", "deflate"]},
        },
    ]
    json_content: dict[str, Any] = {"schema": {"$ref": f"{_REF}InferenceRequest"}}
    if models:
        json_content["example"] = _example_request(signatures[models[0]])
    error = {"application/json": {"schema": {"$ref": f"{_REF}InferenceError"}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "The outputs; with binary outputs the body is the JSON header of "
            f"{HEADER_LENGTH} bytes followed by the tensors' bytes.",
            "headers": {
                "braid-path": {"schema": {"type": "string"}, "description": "The serving path."},
                "braid-fallback": {
                    "schema": {"type": "string"},
                    "description": "Why the request fell back, when it did.",
                },
                HEADER_LENGTH: {"schema": {"type": "integer"}},
            },
            "content": {
                "application/json": {"schema": {"$ref": f"{_REF}InferenceResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    responses |= {code: {"description": text, "content": error} for code, text in _ERRORS.items()}
    return {
        "summary": "Infer (KServe v2, binary tensor data extension)",
        "operationId": "infer_versioned" if versioned else "infer",
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": json_content,
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": f"The JSON header ({HEADER_LENGTH} bytes) then the inputs' "
                    "binary data, in the order of `inputs`.",
                },
            },
        },
        "responses": responses,
    }


def add_infer_operations(
    document: dict[str, Any], signatures: Mapping[str, ModelSignature]
) -> dict[str, Any]:
    """``document`` with the two infer routes and their schemas added (a new dict)."""
    out = copy.deepcopy(document)
    paths = out.setdefault("paths", {})
    paths["/v2/models/{model}/infer"] = {"post": _operation(signatures, versioned=False)}
    paths["/v2/models/{model}/versions/{version}/infer"] = {
        "post": _operation(signatures, versioned=True)
    }
    out.setdefault("components", {}).setdefault("schemas", {}).update(copy.deepcopy(SCHEMAS))
    return out
