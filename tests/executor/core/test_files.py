"""Files a run makes (issue 17, first step): what the code writes under /home/user/outputs/
comes back with the result and is downloadable by its owner only, in process and through
the executor's HTTP API, with real sandboxes."""

from typing import Any

import pytest
from pydantic import ValidationError

from executor.clients.http import HttpClient
from executor.errors import NotFound
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.outputs import output_uri
from schemas.render import render_result
from tests.executor.conftest import TOKEN, ExecutorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MAKE_FILES = """
import os
os.makedirs('outputs/charts', exist_ok=True)
import pandas as pd
pd.DataFrame({'a': [1, 2], 'b': [3, 4]}).to_csv('outputs/clean.csv', index=False)
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.savefig('outputs/charts/line.pdf')
os.symlink('/etc/passwd', 'outputs/link')
open('elsewhere.txt', 'w').write('not an output')
"""


async def _bytes(download: Any) -> bytes:
    return b"".join([chunk async for chunk in download.chunks])


async def download(client: Any, execution_id: str, name: str, user: str) -> bytes:
    return await _bytes(await client.download_output(execution_id, name, user))


async def test_outputs_come_back_with_the_result_for_their_owner_only(make_executor: Any) -> None:
    executor = await make_executor()
    result = await executor.execute(ExecuteRequest(code=MAKE_FILES), "alice")
    assert result.error is None, result
    files = {f.name: f for f in result.files}
    assert set(files) == {"clean.csv", "charts/line.pdf"}  # not the link, nothing outside
    assert files["clean.csv"].mime_type == "text/csv" and files["clean.csv"].size == 12
    assert files["charts/line.pdf"].mime_type == "application/pdf"
    text = render_result(result)
    assert "files in outputs/ (returned separately): charts/line.pdf (" in text
    csv = await download(executor, result.execution_id, "outputs/clean.csv", "alice")
    assert csv == b"a,b\n1,3\n2,4\n"
    pdf = await download(executor, result.execution_id, "outputs/charts/line.pdf", "alice")
    assert pdf.startswith(b"%PDF") and len(pdf) == files["charts/line.pdf"].size
    with pytest.raises(NotFound):
        await executor.download_output(result.execution_id, "outputs/clean.csv", "bob")


async def test_a_session_returns_what_each_run_changed(make_executor: Any) -> None:
    executor = await make_executor()
    info = await executor.open_session(Language.PYTHON, "alice")
    run = lambda code: executor.execute(  # noqa: E731
        ExecuteRequest(code=code, session_id=info.session_id), "alice"
    )
    first = await run(
        "import os, time\nos.makedirs('outputs')\nopen('outputs/a.txt','w').write('a')"
    )
    assert [f.name for f in first.files] == ["a.txt"]
    second = await run("open('outputs/b.txt', 'w').write('bb')")
    assert [f.name for f in second.files] == ["b.txt"]  # a.txt was the first run's
    third = await run("1 + 1")
    assert third.files == []
    fourth = await run("open('outputs/a.txt', 'w').write('changed')")
    assert [(f.name, f.size) for f in fourth.files] == [("a.txt", 7)]


async def test_outputs_download_through_the_http_api(executor_process: ExecutorProcess) -> None:
    client = HttpClient(executor_process.url, TOKEN)
    try:
        result = await client.execute(ExecuteRequest(code=MAKE_FILES), "alice")
        assert {f.name for f in result.files} == {"clean.csv", "charts/line.pdf"}
        pdf = await download(client, result.execution_id, "outputs/charts/line.pdf", "alice")
        assert pdf.startswith(b"%PDF")
        with pytest.raises(NotFound):
            await client.download_output(result.execution_id, "outputs/clean.csv", "bob")
    finally:
        await client.aclose()


async def test_a_later_run_takes_an_output_by_reference(make_executor: Any) -> None:
    executor = await make_executor()
    made = await executor.execute(ExecuteRequest(code=MAKE_FILES), "alice")
    uri = next(output_uri(made.execution_id, f.name) for f in made.files if f.name == "clean.csv")
    used = await executor.execute(
        ExecuteRequest(
            code="import pandas as pd\nint(pd.read_csv('clean.csv').b.sum())", inputs=[uri]
        ),
        "alice",
    )
    assert used.value == "7", used
    with pytest.raises(NotFound, match="only for the user who ran it"):
        await executor.execute(ExecuteRequest(code="1", inputs=[uri]), "bob")


def test_an_input_is_an_output_uri() -> None:
    with pytest.raises(ValidationError, match="not the URI of a file a run wrote"):
        ExecuteRequest(code="1", inputs=["file:///etc/passwd"])
    with pytest.raises(ValidationError, match="not the URI of a file a run wrote"):
        ExecuteRequest(code="1", inputs=["code-exec://executions/exe_00/outputs/../../x"])
    with pytest.raises(ValidationError, match="at most 20 inputs"):
        ExecuteRequest(code="1", inputs=[output_uri("exe_00", f"f{i}") for i in range(21)])
