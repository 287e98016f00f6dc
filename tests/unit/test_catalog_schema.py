"""The path catalog's committed JSON Schema matches the pydantic models and validates files."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from braid.api.catalog import (
    SCHEMA_VERSION,
    PathCatalog,
    catalog_json_schema,
    committed_json_schema,
)
from braid.tooling.zoo import FMNIST_PARTITION


def tensor(shape: list[int], name: str = "INPUT__0") -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape}


def hop(name: str, server: str, i: list[int], o: list[int], role: str = "block") -> dict[str, Any]:
    return {
        "triton_model": name,
        "role": role,
        "server": server,
        "provider": "fmnist-cnn" if server == "local" else "mnist-cnn",
        "input": tensor(i),
        "output": tensor(o, "OUTPUT__0"),
        "params": 10,
        "macs": 100,
        "compute_us": 12.5,
    }


def sample() -> dict[str, Any]:
    metrics = {
        "accuracy": 0.9,
        "params_local": 10,
        "params_host": 0,
        "macs_local": 100,
        "macs_host": 0,
        "compute_us_local": 12.5,
        "compute_us_host": 0.0,
        "bytes_crossing": 0,
    }
    cross_metrics = dict(metrics, params_host=20, compute_us_host=25.0, bytes_crossing=8)
    return {
        "schema_version": SCHEMA_VERSION,
        "build_hash": "abc",
        "local_model": "fmnist-cnn",
        "baseline_accuracy": 0.9,
        "original_path": "fmnist-cnn/original",
        "models": [
            {
                "name": "fmnist-cnn",
                "role": "local",
                "task": "fashion-mnist",
                "source": "test",
                "accuracy": 0.9,
                "input": tensor([1, 28, 28]),
                "output": tensor([10], "OUTPUT__0"),
                "partition": json.loads(FMNIST_PARTITION.model_dump_json(by_alias=True)),
                "blocks": [
                    {
                        "index": 0,
                        "triton_model": "fmnist-cnn.b0",
                        "input": tensor([1, 28, 28]),
                        "output": tensor([10], "OUTPUT__0"),
                        "params": 10,
                        "macs": 100,
                        "compute_us": 12.5,
                    }
                ],
            }
        ],
        "measurement": {"repeats": 10},
        "paths": [
            {
                "id": "fmnist-cnn/original",
                "kind": "original",
                "hops": [hop("fmnist-cnn.b0", "local", [1, 28, 28], [10])],
                "metrics": metrics,
            },
            {
                "id": "fmnist-cnn/cross/0-mnist-cnn:1-1-5/normal",
                "kind": "cross",
                "lout": 0,
                "lin": 5,
                "host_model": "mnist-cnn",
                "hin": 1,
                "hout": 1,
                "link_size": "normal",
                "hops": [
                    hop("fmnist-cnn.b0", "local", [1, 28, 28], [1]),
                    hop("mnist-cnn.xin.x", "host", [1], [1], "link"),
                    hop("fmnist-cnn.b5", "local", [1], [10]),
                ],
                "crossings": [
                    {"after_hop": 0, "source": "local", "target": "host", "bytes": 4},
                    {"after_hop": 1, "source": "host", "target": "local", "bytes": 4},
                ],
                "metrics": cross_metrics,
            },
        ],
    }


def test_committed_schema_is_the_generated_one() -> None:
    # Regenerate with `braid models schema > src/braid/api/path_catalog.schema.json`; a
    # mismatch means the models (or the Model resource's partition they embed) changed
    # without the file, and other-language consumers would validate a stale contract.
    assert committed_json_schema() == json.loads(json.dumps(catalog_json_schema(), sort_keys=True))


def test_sample_validates_with_jsonschema_and_pydantic() -> None:
    doc = sample()
    jsonschema.validate(doc, committed_json_schema())
    catalog = PathCatalog.model_validate(doc)
    assert catalog.path("fmnist-cnn/original").kind == "original"
    # Round trip: what the build writes is what the schema accepts.
    jsonschema.validate(json.loads(catalog.model_dump_json(by_alias=True)), committed_json_schema())


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["paths"][0].update(kind="teleport"), "kind"),
        (lambda d: d["paths"][0]["metrics"].update(accuracy=1.5), "accuracy"),
        (lambda d: d["paths"][0]["hops"][0].update(server="cloud"), "server"),
        (lambda d: d["paths"][0].update(id="Fmnist/Original"), "id"),
        (lambda d: d["paths"][0].update(extra_field=1), "extra_field"),
        (lambda d: d["paths"][1]["crossings"][0].pop("bytes"), "bytes"),
    ],
)
def test_invalid_catalogs_are_refused(mutate: Any, where: str) -> None:
    doc = copy.deepcopy(sample())
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, committed_json_schema())
    with pytest.raises(ValueError, match=where):
        PathCatalog.model_validate(doc)


def test_unknown_path_is_a_key_error_naming_it() -> None:
    catalog = PathCatalog.model_validate(sample())
    with pytest.raises(KeyError, match="nope"):
        catalog.path("nope")
