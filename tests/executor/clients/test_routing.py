"""A real multi-process deployment on loopback: the API and two executors.

Routing spreads stateless runs, sessions stay on their executor, an executor killed with
SIGKILL mid-run turns its sessions into a clear "session lost" while new runs go to the
survivor, and a restarted executor is used again.
"""

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from executor.clients.routing import SEPARATOR, route_key
from tests.executor.conftest import TOKEN, ExecutorProcess, start_executor_process
from tests.openai_tools.conftest import Api, _port, mint, start_api

POOLS = '{"python": 2, "javascript": 0, "bash": 0, "c": 0}'


def _runs(executor: ExecutorProcess) -> int:
    text = httpx.get(
        f"{executor.url}/metrics", headers={"Internal-Auth-Token": TOKEN}, timeout=5
    ).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("code_exec_runs_total{")
    )


@pytest.fixture
def deployment() -> Iterator[tuple[Api, list[ExecutorProcess], ExitStack]]:
    with ExitStack() as stack:
        executors = [
            stack.enter_context(start_executor_process(wait_ready=True, pool_sizes=POOLS))
            for _ in range(2)
        ]
        urls = "[" + ",".join(f'"{e.url}"' for e in executors) + "]"
        api_gen = start_api(_port(), executor_urls=urls, internal_token=TOKEN)
        api = next(api_gen)
        stack.callback(api_gen.close)
        yield api, executors, stack


def _run(api: Api, body: dict[str, object], user: str = "alice") -> httpx.Response:
    return httpx.post(
        f"{api.url}/v1/code_interpreter/run", json=body, headers=api.headers(user), timeout=60
    )


def _wait_healthy(api: Api, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        executors = httpx.get(f"{api.url}/health").json()["executor"]["executors"]
        if sum(e["healthy"] for e in executors.values()) == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"never saw {count} healthy executors")


def test_routing_affinity_failure_and_recovery(
    deployment: tuple[Api, list[ExecutorProcess], ExitStack],
) -> None:
    api, executors, stack = deployment
    _wait_healthy(api, 2)

    # Stateless runs are spread over both executors.
    results: list[httpx.Response] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(_run(api, {"code": f"print({i})"}, f"user{i}"))
        )
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.json()["output"] for r in results) == sorted(f"{i}\n" for i in range(12))
    assert all(_runs(e) > 0 for e in executors), [_runs(e) for e in executors]

    # A session's id names its executor, and its runs stay there.
    sid = httpx.post(
        f"{api.url}/v1/code_interpreter/sessions", json={}, headers=api.headers()
    ).json()["session_id"]
    key = sid.split(SEPARATOR)[0]
    owner = next(e for e in executors if route_key(e.url) == key)
    survivor = next(e for e in executors if e is not owner)
    assert _run(api, {"code": "x = 41", "session_id": sid}).status_code == 200
    assert _run(api, {"code": "x + 1", "session_id": sid}).json()["value"] == "42"

    # The session's executor dies mid-run.
    outcome: list[httpx.Response] = []
    running = threading.Thread(
        target=lambda: outcome.append(
            _run(api, {"code": "import time\ntime.sleep(20)", "session_id": sid})
        )
    )
    running.start()
    time.sleep(1.0)
    os.kill(owner.process.pid, signal.SIGKILL)
    running.join(30)
    assert outcome and outcome[0].status_code == 410, outcome[0].text if outcome else None
    assert "session" in outcome[0].json()["error"]["message"]
    lost = _run(api, {"code": "x", "session_id": sid})
    assert lost.status_code == 410 and "open a new session" in lost.json()["error"]["message"]
    # New runs go to the survivor.
    before = _runs(survivor)
    for i in range(4):
        response = _run(api, {"code": f"print({i} * 2)"})
        assert response.status_code == 200 and response.json()["output"] == f"{i * 2}\n"
    assert _runs(survivor) == before + 4

    # The executor comes back on the same address and gets work again.
    port = int(owner.url.rsplit(":", 1)[1])
    revived = stack.enter_context(
        start_executor_process(wait_ready=True, port=port, pool_sizes=POOLS)
    )
    _wait_healthy(api, 2)
    for _ in range(8):
        assert _run(api, {"code": "print('again')"}).status_code == 200
    assert _runs(revived) > 0
    # Sessions opened now work, wherever they land.
    sid2 = httpx.post(
        f"{api.url}/v1/code_interpreter/sessions", json={}, headers=api.headers()
    ).json()["session_id"]
    assert _run(api, {"code": "y = 1", "session_id": sid2}).status_code == 200
    assert mint("x")  # the tokens of the API are the only ones clients hold
