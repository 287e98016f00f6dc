"""Bodies the fuzzers found that the REST codec answered with a 500 instead of a 400."""

from __future__ import annotations

import pytest

from braid.dataplane.errors import InferenceError, Reason
from braid.dataplane.rest import parse_infer_request


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_bad_request(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    with pytest.raises(InferenceError) as caught:
        parse_infer_request(body, None, "m")
    assert caught.value.reason == Reason.BAD_REQUEST
    assert "nested too deeply" in str(caught.value)
