"""Test hosts of the tests' own: a network namespace joined to this one by a veth pair, with a
server in it. Network tests reach these, never an address outside this machine."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IP = "/usr/sbin/ip"


def netns_available() -> bool:
    """Whether this process can make test hosts (root and iproute2)."""
    return os.geteuid() == 0 and Path(IP).exists()


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


@contextmanager
def netns_host(server: str, port: int, *args: str, tag: str = "") -> Iterator[str]:
    """Run the Python code server (argv: address, port, *args) in a new namespace whose one
    address, in 198.18.0.0/15 (set aside for network tests, RFC 2544), is yielded once the
    server accepts connections on port; all of it is removed after the block."""
    tag = f"{tag}{os.getpid() % 100_000}"[-6:]
    namespace, outer, inner = f"ce-test-{tag}", f"ceh{tag}", f"cen{tag}"
    subnet = f"198.18.{(os.getpid() + sum(map(ord, tag))) % 250}"
    address = f"{subnet}.2"
    process: subprocess.Popen[bytes] | None = None
    subprocess.run([IP, "netns", "del", namespace], capture_output=True, check=False)
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        _ip("addr", "add", f"{subnet}.1/30", "dev", outer)
        _ip("link", "set", outer, "up")
        for ip_args in (
            ("addr", "add", f"{address}/30", "dev", inner),
            ("link", "set", inner, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("netns", "exec", namespace, IP, *ip_args)
        process = subprocess.Popen(
            [IP, "netns", "exec", namespace, sys.executable, "-c", server, address, str(port)]
            + list(args)
        )
        deadline = time.monotonic() + 10
        while True:  # until it listens
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield address
    finally:
        if process is not None:
            process.kill()
            process.wait()
        subprocess.run([IP, "link", "del", outer], capture_output=True, check=False)
        subprocess.run([IP, "netns", "del", namespace], capture_output=True, check=False)
