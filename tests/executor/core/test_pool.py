"""Warm pools: filled ahead, one use per sandbox, bounded waits."""

import asyncio

import pytest

from executor.core.pool import WarmPool
from executor.errors import PoolExhausted, SandboxFailure
from schemas.languages import Language

pytestmark = pytest.mark.anyio


async def test_pool_fills_ahead_and_refills_after_a_take(make_any_executor) -> None:
    executor = await make_any_executor(pool_sizes={"python": 2})
    pool = executor.pools[Language.PYTHON]
    for _ in range(100):
        if pool.ready == 2:
            break
        await asyncio.sleep(0.05)
    assert pool.ready == 2
    first = await pool.acquire()
    second = await pool.acquire()
    assert first.id != second.id
    for _ in range(100):
        if pool.ready == 2:
            break
        await asyncio.sleep(0.05)
    assert pool.ready == 2
    await first.close()
    await second.close()


async def test_empty_pool_waits_a_bounded_time_then_503(make_any_executor) -> None:
    # No wait at all: a zygote starts a real sandbox in about 3 ms, within any wait that is
    # short enough for a test.
    executor = await make_any_executor(
        pool_sizes={"python": 0}, pool_wait_s=0, fake_start_delay_s=1
    )
    with pytest.raises(PoolExhausted) as caught:
        await executor.pools[Language.PYTHON].acquire()
    assert caught.value.status_code == 503
    assert caught.value.retry_after and caught.value.retry_after >= 1


async def test_pool_of_size_zero_still_serves_on_demand(make_any_executor) -> None:
    executor = await make_any_executor(pool_sizes={"python": 0}, pool_wait_s=20)
    sandbox = await executor.pools[Language.PYTHON].acquire()
    assert sandbox.alive
    await sandbox.close()


async def test_a_backend_that_cannot_start_fails_waiters_fast() -> None:
    async def broken(language: Language):
        raise RuntimeError("bwrap: no permission")

    pool = WarmPool(Language.PYTHON, 1, broken, asyncio.Semaphore(1), wait_s=30)
    pool.start()
    try:
        with pytest.raises(SandboxFailure, match="no permission"):
            await asyncio.wait_for(pool.acquire(), 5)
        assert pool.state().last_error == "bwrap: no permission"
    finally:
        await pool.close()
