"""Language-tagged warm pools: sandboxes started ahead, each used for exactly one run.

A stateless run takes a ready sandbox and destroys it afterwards; the pool refills in the
background. A sandbox is never handed out twice. When none is ready in time the caller gets
PoolExhausted (503 with Retry-After) instead of waiting without bound.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from executor.backends.base import Sandbox
from executor.errors import PoolExhausted, SandboxFailure
from schemas.health import PoolHealth
from schemas.languages import Language

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_MAX_BURST = 16


class WarmPool:
    """Ready sandboxes of one language."""

    def __init__(
        self,
        language: Language,
        size: int,
        create: Callable[[Language], Awaitable[Sandbox]],
        start_slots: asyncio.Semaphore,
        wait_s: float,
    ) -> None:
        self.language = language
        self.size = size
        self._create = create
        self._slots = start_slots
        self._wait_s = wait_s
        self._ready: asyncio.Queue[Sandbox | BaseException] = asyncio.Queue()
        self._starting = 0
        self._waiting = 0
        self._wake = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0
        self.last_error: str | None = None
        self.created = 0
        self.exhausted = 0
        self.start_seconds_total = 0.0

    def start(self) -> None:
        """Begin filling in the background."""
        self._filler = asyncio.create_task(self._fill_forever(), name=f"pool-{self.language}")

    @property
    def ready(self) -> int:
        """Sandboxes ready now."""
        queued: list[object] = list(self._ready._queue)  # type: ignore[attr-defined]
        return sum(1 for item in queued if not isinstance(item, BaseException))

    def _wanted(self) -> int:
        return self.size + min(max(self._waiting - self._ready.qsize(), 0), _MAX_BURST)

    async def _fill_forever(self) -> None:
        while True:
            while self._ready.qsize() + self._starting < self._wanted():
                self._starting += 1
                task = asyncio.create_task(self._start_one())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._wake.clear()
            await self._wake.wait()

    async def _start_one(self) -> None:
        try:
            async with self._slots:
                began = time.perf_counter()
                sandbox = await self._create(self.language)
                self.start_seconds_total += time.perf_counter() - began
            self.created += 1
            self._failures = 0
            self._ready.put_nowait(sandbox)
        except Exception as exc:
            self._failures += 1
            self.last_error = str(exc)
            log.error("could not start a %s sandbox: %s", self.language, exc)
            if self._waiting > 0:
                self._ready.put_nowait(exc)  # fail the waiter fast rather than at its deadline
            await asyncio.sleep(min(0.1 * 2**self._failures, _MAX_BACKOFF_S))
        finally:
            self._starting -= 1
            self._wake.set()

    async def acquire(self) -> Sandbox:
        """A ready sandbox, exclusively the caller's; close it after one use."""
        self._waiting += 1
        self._wake.set()
        deadline = time.monotonic() + self._wait_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = await asyncio.wait_for(self._ready.get(), max(remaining, 0))
                except TimeoutError:
                    self.exhausted += 1
                    raise PoolExhausted(
                        f"no {self.language.value} sandbox became free within "
                        f"{self._wait_s:g} s; the executor is at capacity, retry shortly",
                        retry_after=max(1.0, self._wait_s / 2),
                    ) from None
                if isinstance(item, BaseException):
                    raise SandboxFailure(
                        f"cannot start a {self.language.value} sandbox: {item}"
                    ) from item
                if item.alive:
                    return item
                self._discard(item)
        finally:
            self._waiting -= 1
            self._wake.set()

    def _discard(self, sandbox: Sandbox) -> None:
        task = asyncio.create_task(sandbox.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def state(self) -> PoolHealth:
        """Numbers for /health."""
        return PoolHealth(
            size=self.size,
            ready=self.ready,
            starting=self._starting,
            waiting=self._waiting,
            created=self.created,
            last_error=self.last_error,
            failing=self._failures,
        )

    async def close(self) -> None:
        """Stop filling and close the ready sandboxes."""
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if not isinstance(item, BaseException):
                with contextlib.suppress(Exception):
                    await item.close()
