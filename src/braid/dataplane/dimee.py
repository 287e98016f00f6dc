"""Load DIMEE's pools artifact into the gateway's per-sample router (``SampleRouter``).

``braid dimee export`` writes ``dimee-pools.json`` (α, tier depths, centroids, pool sizes,
tier -> path id, the tier models' ``EXIT`` output) and the word-embedding table beside the
model repository's ``catalog.json``. The decisions themselves are pure
(``braid.policy.dimee``); this module only reads files, and says what the executor asks of
a router.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from braid.api.routing import DIMEE_POOLS_FILE, RoutingTable
from braid.policy.dimee import PoolRouter, RouterMode, TierRouter, Tiers

POOLS_FILE = DIMEE_POOLS_FILE
POOLS_MAX_BYTES = 64 * 1024 * 1024
"""The largest pools artifact read (an export is kilobytes: centroids and counts)."""


class PoolsUnavailableError(ValueError):
    """The DIMEE pools artifact cannot be read; the message names the file. The gateway stops
    on it with that one line: a pod whose fetch went wrong says what is missing, not where
    in the loader it noticed."""


def _read_pools(pools_file: Path) -> dict[str, object]:
    """The pools document, read only from a regular file of bounded size: the path comes from
    an OffloadPolicy, and a FIFO, a device or a huge file must not stall the gateway."""
    try:
        info = pools_file.stat()
    except FileNotFoundError:
        raise PoolsUnavailableError(
            f"{pools_file}: the DIMEE pools file is missing (for a fetched poolsArtifact: "
            "did the gateway's fetch-models init container unpack it there?)"
        ) from None
    if not pools_file.is_file():
        raise PoolsUnavailableError(f"{pools_file}: the DIMEE pools artifact is not a regular file")
    if info.st_size > POOLS_MAX_BYTES:
        raise PoolsUnavailableError(f"{pools_file}: larger than {POOLS_MAX_BYTES} bytes")
    try:
        doc = json.loads(pools_file.read_bytes()[:POOLS_MAX_BYTES])
    except (OSError, ValueError) as exc:
        raise PoolsUnavailableError(f"{pools_file}: not a DIMEE pools document ({exc})") from None
    if not isinstance(doc, dict):
        raise PoolsUnavailableError(f"{pools_file}: not a DIMEE pools document")
    return doc


class SampleRouter(Protocol):
    """Per-sample tier routing (DIMEE): which path each sample of a batch should take.

    Called with the request's input as a batch-first numpy view (read-only) and the routing
    table in force; returns one path id per sample, or ``None`` to leave the request to the
    table's weights. It runs on the event loop, so it must be cheap (a nearest-centroid
    lookup on an embedding is; a forward pass is not).
    """

    def route(self, inputs: np.ndarray[Any, Any], table: RoutingTable) -> Sequence[str] | None:
        """Path ids, one per sample, or ``None``."""
        ...


class SampleFeedback(Protocol):
    """A ``SampleRouter`` that learns from the answers (DIMEE's Ours-D): the gateway brings
    back one extra output of each path in ``feedback_outputs`` (path id -> output name of
    its last hop) and hands it to ``observe`` once the path answered, on the event loop,
    with the samples that path served (batch-first, in request order). Paths that fell
    back are not observed: the fallback's model is not the one the router chose.
    """

    @property
    def feedback_outputs(self) -> Mapping[str, str]: ...

    def observe(self, inputs: np.ndarray[Any, Any], path: str, side: bytes) -> None: ...


def load_tier_router(
    pools_file: Path,
    mode: RouterMode = "fixed",
    prior_count: int = 100,
) -> TierRouter:
    """A router over the pools in ``pools_file``: Ours-F (``fixed``), Ours-D (``adaptive``,
    fed back by the tiers' ``EXIT``) or the variant without feedback (``adaptive-routed``)."""
    doc: dict[str, Any] = _read_pools(pools_file)
    dim = None
    rows = []
    for row in doc["centroids"]:
        rows.append(row)
        if row is not None:
            dim = len(row)
    if dim is None:
        raise ValueError(f"{pools_file}: every pool is empty")
    if mode == "adaptive" and "exit_output" not in doc:
        # An export from before the tier models returned EXIT: Triton would refuse the
        # request for it on every call, so say so once, at load time.
        raise ValueError(
            f"{pools_file}: adaptive mode needs tier models that return their exit "
            "(exit_output); export them again with braid dimee evaluate --export"
        )
    centroids = np.array([r if r is not None else [np.nan] * dim for r in rows], dtype=np.float64)
    embeddings = str(doc["word_embeddings"])
    if Path(embeddings).name != embeddings or embeddings in (".", ".."):
        # A name beside the pools file, never a path out of the model repository.
        raise ValueError(f"{pools_file}: word_embeddings must be a file name beside it")
    try:
        table = np.load(pools_file.parent / embeddings, allow_pickle=False)
    except FileNotFoundError:
        raise PoolsUnavailableError(
            f"{pools_file.parent / embeddings}: the word embeddings the DIMEE pools name are "
            "missing"
        ) from None
    tiers = (
        Tiers(mobile=doc["mobile_layers"], edge=doc["edge_layers"], layers=doc["layers"])
        if "layers" in doc
        else None
    )
    return TierRouter(
        pools=PoolRouter(
            centroids,
            np.asarray(doc["pool_sizes"], dtype=np.int64),
            mode=mode,
            prior_count=prior_count,
        ),
        word_embeddings=table.astype(np.float32, copy=False),
        special_ids=[int(i) for i in doc["special_ids"]],
        paths=dict(doc["paths"]),
        tiers=tiers,
        exit_output=str(doc.get("exit_output", "EXIT")),
    )
