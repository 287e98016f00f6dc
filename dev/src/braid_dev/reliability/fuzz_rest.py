"""Fuzz the gateway's REST front end: schemathesis over its OpenAPI, and malformed binary tensors.

Both campaigns run against a gateway that is already up (a process of its own, so a crash or a
leak is the gateway's and not the fuzzer's) in front of healthy Triton servers, so every 5xx
is a failure: nothing upstream is down to excuse it. Only loopback addresses are accepted as
targets.

``run_schemathesis`` reads the published ``/openapi.json`` (which documents the infer body,
the binary form and the headers, see ``braid.dataplane.openapi``) and sends schemathesis's
positive and negative cases for every operation. ``run_binary_tensor_fuzz`` starts from a
valid KServe v2 binary request for the model and breaks it in the ways the binary extension
can be broken: the header length, truncated or surplus tensor bytes, datatypes, shapes,
parameters, compressed bodies, deep JSON.

One 5xx is not a failure: a 504 whose message says *the client's* deadline passed answers a
request that set its own budget (``braid-timeout-ms``, the ``timeout`` parameter) too small
for any path, which fuzzers do all the time. Those are counted apart
(``deadline_set_by_the_request``); a 504 for the gateway's own deadline still counts.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import random
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from braid.dataplane.tensors import DATATYPE_SIZE
from braid.logs import log_event
from braid_dev.reliability.report import FuzzTally
from braid_dev.reliability.usage import ProcessUsage, alive

logger = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_EXAMPLES = 5
CLIENT_DEADLINE = "the client's deadline"
"""In the message of a 504 / DEADLINE_EXCEEDED for a budget the request set itself."""


def require_loopback(url: str) -> None:
    """Fuzzers only write to this machine's loopback: refuse any other target."""
    host = urlsplit(url if "://" in url else f"//{url}").hostname
    if host not in LOOPBACK:
        raise ValueError(f"fuzz target {url!r} is not a loopback address")


@dataclass
class _Outcomes:
    """Status counts of one campaign and a few examples of each 5xx."""

    statuses: Counter[int] = field(default_factory=Counter)
    client_errors: int = 0
    """Cases the HTTP client could not send (e.g. a header value it refuses): not counted."""
    examples: list[str] = field(default_factory=list)

    client_deadline: int = 0
    """504s for a time budget the request itself set and the path could not meet."""

    good_sent: int = 0
    good_failed: int = 0
    """Valid requests sent beside malformed ones, and those not answered 200."""

    def record_good(self, status: int, body: bytes | str, *, is_case: bool = False) -> None:
        """A valid request's answer: anything but 200 is a failure. A companion (not a
        case) that got a 5xx is counted among the statuses too, so ``status_5xx`` sees it."""
        self.good_sent += 1
        if status == 200:
            return
        self.good_failed += 1
        if not is_case:
            self.statuses[status] += 1
        text = body if isinstance(body, str) else body[:300].decode("utf-8", "replace")
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{status} good request: {text[:300]}")

    def record(self, status: int, what: str, body: bytes | str) -> None:
        self.statuses[status] += 1
        text = body if isinstance(body, str) else body[:300].decode("utf-8", "replace")
        if status == 504 and CLIENT_DEADLINE in text:
            self.client_deadline += 1
            return
        if status >= 500 and len(self.examples) < _EXAMPLES:
            self.examples.append(f"{status} {what}: {text[:300]}")

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    @property
    def status_5xx(self) -> int:
        failures = sum(n for status, n in self.statuses.items() if status >= 500)
        return failures - self.client_deadline


def _server_answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/v2/health/live", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def _tally(
    campaign: str,
    outcomes: _Outcomes,
    base_url: str,
    pid: int | None,
    before: ProcessUsage | None,
) -> FuzzTally:
    crashed = not _server_answers(base_url) or (pid is not None and not alive(pid))
    notes: dict[str, float | int | str] = {
        f"status_{status}": n for status, n in sorted(outcomes.statuses.items())
    }
    notes["client_errors"] = outcomes.client_errors
    notes["deadline_set_by_the_request"] = outcomes.client_deadline
    for i, example in enumerate(outcomes.examples):
        notes[f"example_5xx_{i}"] = example
    growth = None
    if before is not None and pid is not None and not crashed:
        after = ProcessUsage.of(pid)
        notes |= before.notes("before") | after.notes("after")
        growth = before.growth_mib(after)
    tally = FuzzTally(
        campaign=campaign,
        cases=outcomes.cases,
        status_5xx=outcomes.status_5xx,
        crashes=int(crashed),
        good_sent=outcomes.good_sent,
        good_failed=outcomes.good_failed,
        rss_growth_mib=growth,
        notes=notes,
    )
    log_event(
        logger, "fuzz.done", campaign=campaign, cases=tally.cases, status_5xx=tally.status_5xx
    )
    return tally


# -- schemathesis over the published OpenAPI ---------------------------------------------------


def _operation_weight(path: str) -> int:
    """Infer routes get most cases: the other routes have little input to vary."""
    return 20 if path.endswith("/infer") else 1


def run_schemathesis(
    base_url: str, cases: int, *, pid: int | None = None, seed: int = 0
) -> FuzzTally:
    """At least ``cases`` schemathesis cases against the gateway at ``base_url``.

    Positive and negative generation for every operation of the gateway's ``/openapi.json``,
    weighted towards the infer routes; hypothesis runs with a fixed seed and no example
    database (nothing is written to the working tree). Rounds repeat with new seeds until
    ``cases`` requests got an answer, since hypothesis stops early on an operation whose input
    space it has exhausted. ``pid`` (the gateway's) adds memory and fd figures.
    """
    import hypothesis
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase
    from schemathesis import GenerationMode

    require_loopback(base_url)
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, schemathesis.core.result.Err):
            raise ValueError(f"the gateway's OpenAPI has an invalid operation: {result.err()}")
        operations.append(result.ok())
    plan = [
        (operation, mode)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    total_weight = sum(_operation_weight(op.path) for op, _ in plan)
    outcomes = _Outcomes()
    session = requests.Session()
    before = ProcessUsage.of(pid) if pid is not None else None

    def run_one(strategy: Any, examples: int, round_seed: int) -> None:
        @hypothesis.settings(
            max_examples=examples,
            database=None,
            deadline=None,
            derandomize=False,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
        @hypothesis.seed(round_seed)
        @hypothesis.given(strategy)
        def send(case: Any) -> None:
            try:
                response = case.call(base_url=base_url, session=session, timeout=30)
            except (requests.exceptions.InvalidHeader, ValueError, UnicodeError):
                outcomes.client_errors += 1
                return
            what = f"{case.method} {case.formatted_path} headers={case.headers}"
            outcomes.record(response.status_code, what, response.content)

        send()

    round_number = 0
    try:
        while outcomes.cases < cases and round_number < 50:
            missing = cases - outcomes.cases
            for operation, mode in plan:
                share = max(1, missing * _operation_weight(operation.path) // total_weight)
                try:
                    run_one(
                        operation.as_strategy(generation_mode=mode),
                        share,
                        seed * 1000 + round_number,
                    )
                except hypothesis.errors.Unsatisfiable:
                    continue  # no negative case exists for an operation without inputs
            round_number += 1
    finally:
        session.close()
    tally = _tally("schemathesis-openapi", outcomes, base_url, pid, before)
    tally.notes["operations"] = len(operations)
    tally.notes["rounds"] = round_number
    return tally


# -- malformed binary tensors ----------------------------------------------------------------


@dataclass(frozen=True)
class BinaryCase:
    """One request: what is wrong with it, its headers and its body."""

    kind: str
    headers: dict[str, str]
    body: bytes
    chunked: bool = False
    """Sent with Transfer-Encoding: chunked (no Content-Length for the limit to check first)."""


@dataclass(frozen=True)
class InferTarget:
    """The input a valid request for the model carries (from the model's metadata)."""

    model: str
    input_name: str
    datatype: str
    shape: list[int]
    output_name: str

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> InferTarget:
        spec = metadata["inputs"][0]
        return cls(
            model=metadata["name"],
            input_name=spec["name"],
            datatype=spec["datatype"],
            shape=[1, *(d if d > 0 else 1 for d in spec["shape"][1:])],
            output_name=metadata["outputs"][0]["name"],
        )

    def tensor_bytes(self, rng: random.Random, shape: list[int] | None = None) -> bytes:
        count = 1
        for d in shape or self.shape:
            count *= d
        return rng.randbytes(count * DATATYPE_SIZE.get(self.datatype, 4))


def binary_request(
    header: dict[str, Any], binary: bytes, extra: dict[str, str] | None = None
) -> BinaryCase:
    encoded = json.dumps(header, allow_nan=True).encode()
    headers = {HEADER_LENGTH: str(len(encoded)), "Content-Type": "application/octet-stream"}
    return BinaryCase("valid", headers | (extra or {}), encoded + binary)


def _header(
    target: InferTarget,
    *,
    name: Any = None,
    datatype: str | None = None,
    shape: Any = None,
    size: Any = None,
    parameters: dict[str, Any] | None = None,
    outputs: Any = None,
) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": target.input_name if name is None else name,
        "datatype": target.datatype if datatype is None else datatype,
        "shape": target.shape if shape is None else shape,
        "parameters": {"binary_data_size": size},
    }
    header: dict[str, Any] = {"id": "fuzz", "inputs": [tensor]}
    header["outputs"] = (
        [{"name": target.output_name, "parameters": {"binary_data": True}}]
        if outputs is None
        else outputs
    )
    if parameters is not None:
        header["parameters"] = parameters
    return header


_WEIRD_DATATYPES = [*DATATYPE_SIZE, "BYTES", "FP8", "", "fp32", "FP32 ", "INT128", "Ω", "\x00"]
_WEIRD_NUMBERS: list[Any] = [
    -1,
    0,
    1,
    2**31,
    2**63,
    2**64 + 1,
    10**30,
    -(2**63) - 1,
    1.5,
    float("nan"),
    float("inf"),
    "1",
    None,
    True,
    [],
    {},
]


def _mutations(target: InferTarget) -> list[Callable[[random.Random], BinaryCase]]:
    """Every way of breaking a valid request; each draws its details from ``rng``."""
    size = len(target.tensor_bytes(random.Random(0)))

    def valid(rng: random.Random) -> BinaryCase:
        return binary_request(_header(target, size=size), target.tensor_bytes(rng))

    def truncated(rng: random.Random) -> BinaryCase:
        data = target.tensor_bytes(rng)
        return binary_request(_header(target, size=size), data[: rng.randrange(size)])

    def surplus(rng: random.Random) -> BinaryCase:
        extra = rng.randbytes(rng.randrange(1, 4096))
        return binary_request(_header(target, size=size), target.tensor_bytes(rng) + extra)

    def wrong_size(rng: random.Random) -> BinaryCase:
        claimed = rng.choice([*_WEIRD_NUMBERS, size - 1, size + 1, size * 2])
        return binary_request(_header(target, size=claimed), target.tensor_bytes(rng))

    def header_length(rng: random.Random) -> BinaryCase:
        case = valid(rng)
        length = int(case.headers[HEADER_LENGTH])
        value = rng.choice(
            [
                "-1",
                "0",
                str(length - 1),
                str(length + 1),
                str(len(case.body)),
                str(len(case.body) + 1),
                str(2**64),
                "1e3",
                "0x10",
                " 12",
                "",
                "nan",
                "١٢",
            ]
        )
        return BinaryCase("header_length", case.headers | {HEADER_LENGTH: value}, case.body)

    def no_header_length(rng: random.Random) -> BinaryCase:
        case = valid(rng)
        headers = {k: v for k, v in case.headers.items() if k != HEADER_LENGTH}
        return BinaryCase("no_header_length", headers, case.body)

    def datatype(rng: random.Random) -> BinaryCase:
        dtype = rng.choice(_WEIRD_DATATYPES)
        shape = target.shape
        nbytes = len(target.tensor_bytes(rng, shape)) // DATATYPE_SIZE.get(target.datatype, 4)
        nbytes *= DATATYPE_SIZE.get(dtype, 1)
        return binary_request(_header(target, datatype=dtype, size=nbytes), rng.randbytes(nbytes))

    def shape(rng: random.Random) -> BinaryCase:
        options: list[Any] = [
            [],
            [0],
            [-1, *target.shape[1:]],
            [0, *target.shape[1:]],
            [2**63, *target.shape[1:]],
            [2**64, 2**64],
            [10**40],
            [rng.randrange(1, 64), *target.shape[1:]],
            [*target.shape, 1],
            target.shape[:-1],
            [1.5, *target.shape[1:]],
            ["1", *target.shape[1:]],
            [True, *target.shape[1:]],
            None,
            "1,2",
            {"0": 1},
            [[1], 2],
        ]
        bad = rng.choice(options)
        data = target.tensor_bytes(rng)
        return binary_request(_header(target, shape=bad, size=len(data)), data)

    def names(rng: random.Random) -> BinaryCase:
        name = rng.choice(["", "x", target.input_name + "\x00", "Ω" * 200, 5, None, "INPUT__1"])
        data = target.tensor_bytes(rng)
        return binary_request(_header(target, name=name, size=len(data)), data)

    def two_inputs(rng: random.Random) -> BinaryCase:
        data = target.tensor_bytes(rng)
        header = _header(target, size=len(data))
        header["inputs"] = header["inputs"] * rng.randrange(2, 5)
        return binary_request(header, data * len(header["inputs"]))

    def parameters(rng: random.Random) -> BinaryCase:
        params = rng.choice(
            [
                {"timeout": rng.choice(_WEIRD_NUMBERS)},
                {"braid_path": rng.choice([*_WEIRD_NUMBERS, "", "x/y", "../../etc"])},
                {"binary_data_output": rng.choice(_WEIRD_NUMBERS)},
                {"timeout": 10**30},
            ]
        )
        data = target.tensor_bytes(rng)
        return binary_request(_header(target, size=len(data), parameters=params), data)

    def outputs(rng: random.Random) -> BinaryCase:
        bad = rng.choice(
            [
                [],
                [{"name": "nope"}],
                [{}],
                [{"name": target.output_name, "parameters": []}],
                [{"name": target.output_name}] * 3,
                {"name": target.output_name},
                "all",
                [5],
            ]
        )
        data = target.tensor_bytes(rng)
        return binary_request(_header(target, size=len(data), outputs=bad), data)

    def json_data(rng: random.Random) -> BinaryCase:
        count = len(target.tensor_bytes(rng)) // DATATYPE_SIZE.get(target.datatype, 4)
        data = rng.choice(
            [
                [0.0] * count,
                [0.0] * (count + 1),
                ["a"] * count,
                [[0.0]] * count,
                [None] * count,
                [1e308 * 10] * count,
                [2**70] * count,
                [[0.0, 0.0], [0.0]],
                {"a": 1},
                "zeros",
            ]
        )
        tensor = {
            "name": target.input_name,
            "datatype": rng.choice([target.datatype, "BYTES", "BF16", "INT8", "BOOL"]),
            "shape": rng.choice([target.shape, [count], [2**64], [-1]]),
            "data": data,
        }
        body = json.dumps({"inputs": [tensor]}).encode()
        return BinaryCase("json_data", {"Content-Type": "application/json"}, body)

    def deep_json(rng: random.Random) -> BinaryCase:
        depth = rng.choice([1000, 100_000])
        body = ("[" * depth + "]" * depth).encode()
        if rng.random() < 0.5:
            body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ' + (
                body + b"}]}"
            )
        return BinaryCase("deep_json", {"Content-Type": "application/json"}, body)

    def garbage(rng: random.Random) -> BinaryCase:
        body = rng.randbytes(rng.randrange(0, 2048))
        headers = {HEADER_LENGTH: str(rng.randrange(0, 4096))} if rng.random() < 0.5 else {}
        return BinaryCase("garbage", headers, body)

    def header_not_object(rng: random.Random) -> BinaryCase:
        text = rng.choice(["[]", "null", "1", '"x"', '{"inputs": null}', '{"inputs": {}}', "{}"])
        body = text.encode() + target.tensor_bytes(rng)
        return BinaryCase("header_not_object", {HEADER_LENGTH: str(len(text))}, body)

    def compressed(rng: random.Random) -> BinaryCase:
        case = valid(rng)
        encoding = rng.choice(["gzip", "deflate", "GZIP", "br", "zstd", "gzip, deflate", "x"])
        method = rng.choice(["good", "truncated", "garbage", "wrong", "bomb"])
        if method == "bomb":
            body = gzip.compress(bytes(rng.choice([2**20, 2**26])), compresslevel=9)
            encoding = "gzip"
        else:
            body = (
                gzip.compress(case.body) if "gzip" in encoding.lower() else zlib.compress(case.body)
            )
        if method == "truncated":
            body = body[: rng.randrange(len(body))]
        elif method == "garbage":
            body = rng.randbytes(len(body))
        elif method == "wrong":
            encoding = "deflate" if encoding.lower() == "gzip" else "gzip"
        return BinaryCase(
            f"compressed_{method}", case.headers | {"Content-Encoding": encoding}, body
        )

    def content_length(rng: random.Random) -> BinaryCase:
        case = valid(rng)
        return BinaryCase("oversized", case.headers, case.body + bytes(rng.choice([2**20, 2**22])))

    def chunked(rng: random.Random) -> BinaryCase:
        case = rng.choice([valid, content_length, compressed])(rng)
        return BinaryCase(f"chunked_{case.kind}", case.headers, case.body, chunked=True)

    return [
        chunked,
        valid,
        truncated,
        surplus,
        wrong_size,
        header_length,
        no_header_length,
        datatype,
        shape,
        names,
        two_inputs,
        parameters,
        outputs,
        json_data,
        deep_json,
        garbage,
        header_not_object,
        compressed,
        content_length,
    ]


def binary_cases(target: InferTarget, cases: int, seed: int = 0) -> Iterator[BinaryCase]:
    """``cases`` malformed (and a few valid) requests, cycling through every mutation."""
    rng = random.Random(seed)
    mutations = _mutations(target)
    for i in range(cases):
        mutate = mutations[i % len(mutations)]
        case = mutate(rng)
        kind = mutate.__name__ if case.kind == "valid" else case.kind
        yield BinaryCase(kind, case.headers, case.body, case.chunked)


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def run_binary_tensor_fuzz(
    base_url: str,
    model: str,
    cases: int,
    *,
    pid: int | None = None,
    seed: int = 0,
    concurrency: int = 8,
) -> FuzzTally:
    """``cases`` malformed KServe v2 binary requests to ``model``'s infer route.

    ``concurrency`` requests are in flight at once: ``concurrency - 1`` cases and one valid
    companion, so bad requests meet good ones at the same hops (the gateway coalesces
    concurrent calls of a hop into one). A companion not answered 200 is a ``good_failed``.
    """
    require_loopback(base_url)
    local = threading.local()
    clients: list[httpx.Client] = []

    def post(case: BinaryCase) -> tuple[int | None, bytes | str]:
        client: httpx.Client | None = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=base_url, timeout=30)
            clients.append(client)
        try:
            response = client.post(
                f"/v2/models/{model}/infer",
                content=_chunks(case.body) if case.chunked else case.body,
                headers={k.encode(): v.encode() for k, v in case.headers.items()},
            )
        except httpx.LocalProtocolError:
            return None, ""  # httpx will not send it (e.g. " 12" as a header)
        except httpx.TransportError as exc:
            return 599, repr(exc)  # reset, timeout: the server's doing
        return response.status_code, response.content

    metadata = httpx.get(f"{base_url}/v2/models/{model}", timeout=30).json()
    target = InferTarget.from_metadata(metadata)
    before = ProcessUsage.of(pid) if pid is not None else None
    outcomes = _Outcomes()
    kinds: Counter[str] = Counter()
    # A few cases cannot be sent (httpx refuses the header); draw more to answer ``cases``.
    pending = binary_cases(target, 2 * cases, seed)
    companions = random.Random(seed + 1)
    valid = next(m for m in _mutations(target) if m.__name__ == "valid")
    per_window = max(1, concurrency - 1)
    try:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            while outcomes.cases < cases:
                window = list(itertools.islice(pending, min(per_window, cases - outcomes.cases)))
                if not window:
                    break
                companion = valid(companions) if concurrency > 1 else None
                sent = [*window, companion] if companion is not None else window
                answers = list(pool.map(post, sent))
                if companion is not None:
                    status, body = answers.pop()
                    outcomes.record_good(599 if status is None else status, body)
                for case, (status, body) in zip(window, answers, strict=True):
                    if status is None:
                        outcomes.client_errors += 1
                        continue
                    kinds[case.kind] += 1
                    outcomes.record(status, case.kind, body)
                    if case.kind == "valid":
                        outcomes.record_good(status, body, is_case=True)
    finally:
        for client in clients:
            client.close()
    tally = _tally("binary-tensors", outcomes, base_url, pid, before)
    tally.notes["kinds"] = len(kinds)
    tally.notes["concurrency"] = concurrency
    return tally
