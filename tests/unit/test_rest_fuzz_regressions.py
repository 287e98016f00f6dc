"""Bodies the fuzzers found that the REST codec answered with a 500 instead of a 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.rest import parse_infer_request, read_body


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_bad_request(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    with pytest.raises(InferenceError) as caught:
        parse_infer_request(body, None, "m")
    assert caught.value.reason == Reason.BAD_REQUEST
    assert "nested too deeply" in str(caught.value)


@pytest.mark.parametrize("timeout", ["NaN", "-Infinity", "0", "-1"])
def test_a_timeout_parameter_that_is_not_a_positive_number_is_a_bad_request(
    timeout: str,
) -> None:
    """NaN passed the old ``<= 0`` check; as a budget it made every comparison false, and the
    hop's instant DEADLINE_EXCEEDED put a healthy server in cool-down (503 for others)."""
    body = (
        '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}],'
        f' "parameters": {{"timeout": {timeout}}}}}'
    ).encode()
    with pytest.raises(InferenceError) as caught:
        parse_infer_request(body, None, "m")
    assert caught.value.reason == Reason.BAD_REQUEST
    assert "timeout" in str(caught.value)


class _StalledUpload:
    """A request whose client sent its headers and one chunk, then nothing."""

    def __init__(self) -> None:
        self.headers = {"content-length": "100"}

    async def stream(self) -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.Event().wait()  # never set: the rest never comes


def test_a_stalled_upload_is_refused_instead_of_held_forever() -> None:
    with pytest.raises(InferenceError) as caught:
        asyncio.run(read_body(_StalledUpload(), 1024, timeout_s=0.05))  # type: ignore[arg-type]
    assert caught.value.reason == Reason.SLOW_BODY
    assert caught.value.http_status == 408
    assert "1 bytes did" in str(caught.value)
