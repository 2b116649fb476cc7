"""The executor client's downloads, read whole within a bound or let go of unread."""

import contextlib
from collections.abc import AsyncGenerator

from executor.errors import ExecutorError
from executor.interface import Download


async def release(download: Download) -> None:
    """Let go of a download that will not be sent: its file, its connection to an executor."""
    chunks = download.chunks
    if isinstance(chunks, AsyncGenerator):
        # The HTTP client's download closes its response in its generator's `finally`, which
        # runs only once the generator has started: so it is started (one chunk is read).
        try:
            with contextlib.suppress(ExecutorError):
                await anext(chunks, None)
        finally:
            await chunks.aclose()


async def read_at_most(download: Download, limit: int) -> bytes | None:
    """The whole file, or None (the download let go) when it is over limit bytes."""
    if download.size > limit:
        await release(download)
        return None
    data = bytearray()
    chunks = download.chunks
    try:
        async for chunk in chunks:
            data += chunk
            if len(data) > limit:  # grown since it was measured
                return None
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
    return bytes(data)
