"""Attacks on a real `code-exec api` process (real sandboxes, loopback): what it holds in
memory, and whether another user stays served, measured while each attack runs."""

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.openai_tools.conftest import DEFAULTS, Api
from tests.processes import code_exec_process

pytestmark = pytest.mark.slow

OPEN_FILES = 1024  # what a default systemd unit or container gives a process


@pytest.fixture(scope="module")
def small_host() -> Iterator[Api]:
    """The API with the open-file limit of a small host and a 1 s header deadline."""
    settings = {
        **DEFAULTS,
        "header_timeout_s": "1",
        "max_concurrent_runs_per_user": "4",
        "pool_sizes": '{"python": 3, "javascript": 0, "bash": 0, "c": 0}',
    }
    with (
        code_exec_process(
            "api",
            None,
            settings,
            lambda health: health["executor"]["pools"]["python"]["ready"] >= 2,
            open_files=OPEN_FILES,
        ) as (url, process),
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield Api(url, http, process)


def _status(api: Api, field: str) -> int:
    assert api.process is not None
    with open(f"/proc/{api.process.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


def _reset_peak(api: Api) -> None:
    assert api.process is not None
    with open(f"/proc/{api.process.pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


class Bystander:
    """Another user's print(1) through the API, over and over, timing each, until stopped."""

    def __init__(self, api: Api) -> None:
        self.api, self.samples, self.errors = api, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.api.url, timeout=60) as http:
            while not self._stop.is_set():
                began = time.perf_counter()
                response = http.post(
                    "/v1/code_interpreter/run",
                    json={"code": "print(1)"},
                    headers=self.api.headers("bystander"),
                )
                if response.status_code != 200 or response.json()["output"] != "1\n":
                    self.errors.append(response.text[:200])
                self.samples.append(time.perf_counter() - began)
                time.sleep(0.05)

    def __enter__(self) -> "Bystander":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def p99(self) -> float:
        """The 99th percentile latency (the largest, for fewer than 100 samples)."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _raw(api: Api) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_a_chunked_body_without_a_token_costs_the_server_nothing(small_host: Api) -> None:
    _reset_peak(small_host)
    before = _status(small_host, "VmRSS")
    sock = _raw(small_host)
    sock.sendall(
        b"POST /v1/code_interpreter/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"100000\r\n" + b" " * 0x100000 + b"\r\n"
    sent = 0
    sock.settimeout(2)
    try:
        while sent < 300 * 1024 * 1024:
            sock.sendall(chunk)
            sent += 0x100000
    except OSError:
        pass  # the server answered and closed, or stopped reading: either way it holds nothing
    sock.settimeout(5)
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
    grown = _status(small_host, "VmHWM") - before
    assert grown < 32 * 1024 * 1024, (
        f"the server grew by {grown >> 20} MiB for a caller with no token"
    )


def test_a_streaming_client_that_never_reads_holds_back_its_own_run(small_host: Api) -> None:
    code = "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(800):\n    sys.stdout.write(block)"
    body = json.dumps({"code": code, "timeout": 8, "stream": True}).encode()
    _reset_peak(small_host)
    before = _status(small_host, "VmRSS")
    with Bystander(small_host) as bystander:
        sock = _raw(small_host)
        sock.sendall(
            b"POST /v1/code_interpreter/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {small_host.headers('reader')['Authorization'].split()[1]}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(10)  # the run prints until its timeout; the client reads nothing
        sock.close()
        time.sleep(1)
    grown = _status(small_host, "VmHWM") - before
    assert grown < 96 * 1024 * 1024, f"grew by {grown >> 20} MiB for an unread stream of 800 MiB"
    assert not bystander.errors, bystander.errors
    assert len(bystander.samples) >= 10 and bystander.p99() < 2.0, bystander.samples


def test_a_crowd_of_idle_connections_neither_exhausts_files_nor_locks_others_out(
    small_host: Api,
) -> None:
    crowd: list[socket.socket] = []
    for _ in range(OPEN_FILES + 100):
        try:
            crowd.append(_raw(small_host))
        except OSError:
            break
    try:
        began = time.perf_counter()
        response = httpx.post(
            f"{small_host.url}/v1/code_interpreter/run",
            json={"code": "print('still here')"},
            headers=small_host.headers("regular"),
            timeout=30,
        )
        waited = time.perf_counter() - began
        assert response.json()["output"] == "still here\n"
        assert waited < 10, waited
        # The crowd sent nothing: the server closed them after the header deadline.
        time.sleep(1.5)
        closed = 0
        for sock in crowd:
            sock.settimeout(0.01)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        assert closed >= len(crowd) * 0.9, (closed, len(crowd))
    finally:
        for sock in crowd:
            sock.close()


def test_concurrent_downloads_of_a_big_file_are_streamed(small_host: Api) -> None:
    auth = small_host.headers("downloader")
    sid = small_host.http.post("/v1/code_interpreter/sessions", json={}, headers=auth).json()[
        "session_id"
    ]
    made = small_host.http.post(
        "/v1/code_interpreter/run",
        json={
            "code": "with open('big.bin', 'wb') as f:\n    f.write(b'z' * (64 << 20))",
            "session_id": sid,
        },
        headers=auth,
    )
    assert made.status_code == 200 and made.json()["exit_code"] == 0, made.text
    _reset_peak(small_host)
    before = _status(small_host, "VmRSS")
    sizes: list[int] = []

    def download() -> None:
        total = 0
        with httpx.stream(
            "GET",
            f"{small_host.url}/v1/code_interpreter/sessions/{sid}/files/big.bin",
            headers=auth,
            timeout=60,
        ) as response:
            for chunk in response.iter_bytes():
                total += len(chunk)
                time.sleep(0.001)  # a client slower than the disk
        sizes.append(total)

    threads = [threading.Thread(target=download) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sizes == [64 << 20] * 12
    grown = _status(small_host, "VmHWM") - before
    # Read whole, 12 at once held 12 x 64 MiB (+1.1 GiB); streamed, a chunk or two each.
    assert grown < 96 * 1024 * 1024, f"grew by {grown >> 20} MiB for 12 downloads of 64 MiB"


def test_a_directory_tree_thousands_of_levels_deep_lists_and_uploads(small_host: Api) -> None:
    auth = small_host.headers("tree")
    sid = small_host.http.post("/v1/code_interpreter/sessions", json={}, headers=auth).json()[
        "session_id"
    ]
    code = (
        "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
        "os.chdir('/home/user')"
    )
    made = small_host.http.post(
        "/v1/code_interpreter/run", json={"code": code, "session_id": sid}, headers=auth
    )
    assert made.json()["exit_code"] == 0, made.text
    listed = small_host.http.get(f"/v1/code_interpreter/sessions/{sid}/files", headers=auth)
    assert listed.status_code == 200, listed.text
    depths = [entry["path"].count("/") for entry in listed.json()]
    assert max(depths) == 63  # listed as deep as a path can be named (64 names)
    deep = "/".join(["u"] * 1200) + "/f.txt"
    upload = small_host.http.post(
        f"/v1/code_interpreter/sessions/{sid}/files",
        files={"file": ("f.txt", b"x")},
        data={"path": deep},
        headers=auth,
    )
    assert upload.status_code == 422 and "too deep" in upload.json()["error"]["message"]


def test_a_session_survives_its_stream_being_dropped_mid_run(small_host: Api) -> None:
    auth = small_host.headers("dropper")
    sid = small_host.http.post("/v1/code_interpreter/sessions", json={}, headers=auth).json()[
        "session_id"
    ]
    small_host.http.post(
        "/v1/code_interpreter/run", json={"code": "x = 41", "session_id": sid}, headers=auth
    )
    with httpx.stream(
        "POST",
        f"{small_host.url}/v1/code_interpreter/run",
        json={"code": "import time\nprint('go', flush=True)\ntime.sleep(30)", "session_id": sid},
        headers={**auth, "Accept": "text/event-stream"},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if "go" in line:
                break  # the client goes away mid-run
    again = small_host.http.post(
        "/v1/code_interpreter/run",
        json={"code": "print('back')\n'x' in dir()", "session_id": sid},
        headers=auth,
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["output"] == "back\n" and body["state_lost"] is True and body["value"] == "False"
    after = small_host.http.post(
        "/v1/code_interpreter/run", json={"code": "1 + 1", "session_id": sid}, headers=auth
    )
    assert after.json()["value"] == "2" and after.json()["state_lost"] is False
