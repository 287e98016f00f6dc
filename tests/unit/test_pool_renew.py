"""The pool gives an unreachable endpoint fresh channels, at most every ``renew_every_s``,
and closes the old ones only after calls in flight on them had time to finish."""

from __future__ import annotations

import asyncio

from braid.dataplane.pool import TritonPool


async def test_renew_replaces_the_channels_rate_limited_and_retires_the_old_ones() -> None:
    pool = TritonPool(renew_every_s=60.0, retire_after_s=0.05)
    address = "127.0.0.1:9"  # discard: nothing answers gRPC there
    first = pool.stub(address)
    assert pool.renew(address) is True
    renewed = pool.stub(address)
    assert renewed is not first
    assert pool.renew(address) is False  # within renew_every_s
    assert pool.stub(address) is renewed
    await asyncio.sleep(0.2)  # the old channels were closed after retire_after_s
    await pool.close()
