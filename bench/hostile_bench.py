"""Hostile mix (issue: hold every promise under hostile input and load), part of `make stress`.

Normal users run print(1) through /v1/tools/call, first alone (the anchor), then while
attackers run beside them on the same `code-exec serve`:
  - streaming clients that never read, their code printing 800 MiB;
  - chunked bodies of 300 MiB with no token;
  - forged runner messages: session code writing forged and garbage control lines, and an
    endless line, to the runner's control pipe (fd 4);
  - a 3,000-level directory tree, then the file list of that session;
  - exceptions with a 10 MB message, three frames deep;
  - a crowd of idle connections that never send a request;
  - one user flooding MCP initialize;
  - bad input (lone surrogates, 401-digit timeouts, deep JSON).
Reported: the normal users' p50/p99 alone and under attack, errors they saw, the server's peak
RSS, and every 5xx any attacker got (there should be none).
"""

import json
import os
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from bench.common import api_process, bench_token, machine, ms, percentile, table
from tests.mcp_wire import ACCEPT, initialize

DURATION_S = float(os.environ.get("BENCH_HOSTILE_S", "60"))
NORMAL_USERS = 4


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Run:
    """Threads that loop until stopped, counting what the server answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.normal_errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def count(self, who: str, status: int) -> None:
        with self._lock:
            self.answers[f"{who} {status // 100}xx"] += 1

    def spawn(self, loop: Callable[[], None]) -> None:
        def forever() -> None:
            while not self.stop.is_set():
                try:
                    loop()
                except (httpx.HTTPError, OSError) as exc:
                    with self._lock:
                        self.answers[f"{loop.__name__} {type(exc).__name__}"] += 1
                    time.sleep(0.2)

        thread = threading.Thread(target=forever, name=loop.__name__, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)


def normal_user(run: Run, user: str) -> Callable[[], None]:
    http = httpx.Client(base_url=run.url, timeout=120)
    headers = {"Authorization": f"Bearer {bench_token(user)}"}
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "run_code", "arguments": '{"code": "print(1)"}'},
    }

    def normal() -> None:
        began = time.perf_counter()
        response = http.post("/v1/tools/call", json=call, headers=headers)
        elapsed = time.perf_counter() - began
        ok = (
            response.status_code == 200
            and response.json()[0]["content"] == "exit_code: 0\nstdout:\n1"
        )
        with run._lock:
            if ok:
                run.latencies.append(elapsed)
            else:
                run.normal_errors.append(f"{response.status_code} {response.text[:120]}")
        time.sleep(0.1)

    return normal


def attackers(run: Run) -> list[Callable[[], None]]:
    host, port = run.url.removeprefix("http://").split(":")
    token = bench_token("attacker")
    auth = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=run.url, timeout=120)

    def raw() -> socket.socket:
        return socket.create_connection((host, int(port)), timeout=5)

    def unread_stream() -> None:
        code = (
            "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(800):\n    sys.stdout.write(block)"
        )
        body = json.dumps({"code": code, "timeout": 10, "stream": True}).encode()
        sock = raw()
        sock.sendall(
            b"POST /v1/code_interpreter/run HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        run.stop.wait(12)
        sock.close()

    def chunked_without_token() -> None:
        sock = raw()
        sock.sendall(
            b"POST /v1/code_interpreter/run HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"100000\r\n" + b" " * 0x100000 + b"\r\n"
        sock.settimeout(2)
        try:
            for _ in range(300):
                sock.sendall(chunk)
        except OSError:
            pass
        sock.settimeout(5)
        answer = sock.recv(64)
        run.count("chunked", int(answer.split()[1]) if answer.startswith(b"HTTP/1.1") else 0)
        sock.close()

    forged = (
        "import os, threading\n"
        'os.write(4, b\'{"op": "done", "id": "forged", "exit_code": "x"}\\n\')\n'
        "os.write(4, b'not json at all\\n[1, 2]\\n')\n"
        "def endless():\n"
        "    try:\n"
        "        while True:\n"
        "            os.write(4, b'x' * (1 << 20))\n"
        "    except OSError:\n"
        "        pass\n"
        "threading.Thread(target=endless, daemon=True).start()\n"
        "print('forged')"
    )

    def forged_messages() -> None:
        sid = http.post("/v1/code_interpreter/sessions", json={}, headers=auth).json()["session_id"]
        for code in (forged, "print('after')", "print('again')"):
            response = http.post(
                "/v1/code_interpreter/run", json={"code": code, "session_id": sid}, headers=auth
            )
            run.count("forged", response.status_code)
        http.delete(f"/v1/code_interpreter/sessions/{sid}", headers=auth)

    def deep_tree() -> None:
        sid = http.post("/v1/code_interpreter/sessions", json={}, headers=auth).json()["session_id"]
        code = (
            "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
            "os.chdir('/home/user')"
        )
        run.count(
            "tree",
            http.post(
                "/v1/code_interpreter/run", json={"code": code, "session_id": sid}, headers=auth
            ).status_code,
        )
        run.count(
            "tree", http.get(f"/v1/code_interpreter/sessions/{sid}/files", headers=auth).status_code
        )
        http.delete(f"/v1/code_interpreter/sessions/{sid}", headers=auth)

    def huge_exception() -> None:
        code = (
            "def a():\n    b()\ndef b():\n    c()\n"
            "def c():\n    raise ValueError('x' * 10_000_000)\na()"
        )
        run.count(
            "exception",
            http.post("/v1/code_interpreter/run", json={"code": code}, headers=auth).status_code,
        )

    def idle_crowd() -> None:
        crowd = []
        for _ in range(500):
            try:
                crowd.append(raw())
            except OSError:
                break
        run.stop.wait(3)
        for sock in crowd:
            sock.close()

    def mcp_flood() -> None:
        for _ in range(50):
            response = http.post(
                "/mcp", json=initialize(client="flood"), headers={**auth, **ACCEPT}
            )
            run.count("mcp", response.status_code)
        run.stop.wait(1)

    def bad_input() -> None:
        for raw_body in (
            '{"code": "echo \\ud800", "language": "bash"}',
            '{"code": "1", "timeout": ' + "9" * 401 + "}",
            "[" * 50_000 + "]" * 50_000,
        ):
            response = http.post(
                "/v1/code_interpreter/run",
                content=raw_body,
                headers={**auth, "content-type": "application/json"},
            )
            run.count("bad input", response.status_code)
        run.stop.wait(0.5)

    return [
        unread_stream,
        unread_stream,
        chunked_without_token,
        forged_messages,
        deep_tree,
        huge_exception,
        idle_crowd,
        mcp_flood,
        bad_input,
    ]


def _phase(url: str, pid: int, with_attackers: bool, seconds: float) -> Run:
    run = Run(url)
    for i in range(NORMAL_USERS):
        run.spawn(normal_user(run, f"normal{i}"))
    if with_attackers:
        for attack in attackers(run):
            run.spawn(attack)
    run.stop.wait(seconds)
    run.join()
    return run


def main() -> None:
    """Print the table."""
    print(f"machine: {machine()}")
    with api_process(
        "serve",
        pool_sizes='{"python": 6, "javascript": 0, "bash": 0, "c": 0}',
        max_concurrent_runs_per_user="8",
    ) as url:
        alone = _phase(url, url.pid, False, DURATION_S / 3)
        with open(f"/proc/{url.pid}/clear_refs", "w") as f:
            f.write("5")  # peak RSS from here on
        rss_before = _status(url.pid, "VmRSS")
        attacked = _phase(url, url.pid, True, DURATION_S)
        peak = _status(url.pid, "VmHWM")
    a50, a99 = statistics.median(alone.latencies), percentile(alone.latencies, 99)
    h50, h99 = statistics.median(attacked.latencies), percentile(attacked.latencies, 99)
    print(
        table(
            [
                ("normal users' print(1) p50", ms(h50), ms(a50), f"{h50 / a50:.2f}x", "served"),
                ("normal users' print(1) p99", ms(h99), ms(a99), f"{h99 / a99:.2f}x", "served"),
                (
                    "normal users' runs",
                    str(len(attacked.latencies)),
                    str(len(alone.latencies)),
                    "-",
                    "-",
                ),
                (
                    "normal users' errors",
                    str(len(attacked.normal_errors)),
                    str(len(alone.normal_errors)),
                    "-",
                    "0",
                ),
                (
                    "server RSS before / peak",
                    f"{rss_before >> 20} / {peak >> 20} MiB",
                    "-",
                    "-",
                    "bounded",
                ),
            ]
        )
    )
    print("attackers' answers:", dict(sorted(attacked.answers.items())))
    five = {k: v for k, v in attacked.answers.items() if " 5xx" in k}
    print("5xx answers to attackers:", five or "none")
    if attacked.normal_errors:
        print("normal users' errors:", attacked.normal_errors[:5])


if __name__ == "__main__":
    main()
