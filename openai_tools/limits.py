"""Per-user cap on runs in progress."""

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from executor.errors import LimitExceeded


class RunLimiter:
    """At most `cap` runs in progress per user; the next one gets 429 with Retry-After."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._running: defaultdict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[None]:
        """Hold one of the user's run slots for the duration of the block."""
        if self._running[user] >= self.cap:
            raise LimitExceeded(
                f"{self.cap} runs of this user are in progress, the limit; wait for one to finish",
                retry_after=1.0,
            )
        self._running[user] += 1
        try:
            yield
        finally:
            self._running[user] -= 1
            if not self._running[user]:
                del self._running[user]
