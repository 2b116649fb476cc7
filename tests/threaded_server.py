"""An ASGI app served by uvicorn on loopback in a thread of the test's own process, for the
servers a test stands up beside the real ones (a proxy, an app built with test settings)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve_in_thread(app: Any, port: int, timeout_s: float = 20, **config: Any) -> Iterator[str]:
    """Serve app on 127.0.0.1:port (uvicorn.Config options in config) until the block ends;
    yields its URL once it accepts connections."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
