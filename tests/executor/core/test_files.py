"""Files a run makes (issue 17, first step): what the code writes under /home/user/outputs/
comes back with the result and is downloadable by its owner only, in process and through
the executor's HTTP API, with real sandboxes."""

import base64
import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from executor.clients.http import HttpClient
from executor.errors import NotFound
from schemas.execution import ExecuteRequest
from schemas.file_uris import (
    OutputRef,
    SessionFileRef,
    output_uri,
    parse_file_uri,
    parse_input,
    session_file_uri,
)
from schemas.languages import Language
from schemas.render import render_result
from schemas.sessions import SessionOptions
from schemas.tools import RunCodeArgs
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
    uri = f"code-exec://executions/{result.execution_id}/outputs/charts/line.pdf"
    assert "files in outputs/ (read by URI; a link in inputs gives a later run the file):\n" in text
    assert (
        f"\n- charts/line.pdf ({files['charts/line.pdf'].size:,} bytes, application/pdf) {uri}"
        in text
    )
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


def test_an_input_is_the_uri_of_a_file_code_exec_keeps() -> None:
    bad = [
        "file:///etc/passwd",
        "code-exec://executions/exe_00/outputs/../../x",
        "code-exec://sessions/ses_abc/files/../../etc/passwd",
        "code-exec://sessions/ses_abc/files/a/%2e%2e/%2e%2e/b",
        "code-exec://sessions/ses_abc/files/a%00b",
        "code-exec://sessions/../files/x",
    ]
    for uri in bad:
        with pytest.raises(ValidationError, match="not the URI of a file code-exec keeps"):
            ExecuteRequest(code="1", inputs=[uri])
    assert parse_file_uri(session_file_uri("ses_a-b_c", "data/my file.csv")) == SessionFileRef(
        "ses_a-b_c", "data/my file.csv"
    )
    # The download URLs a Chat or Responses message names files by: read by path, not fetched.
    url = "https://api.example/v1/executions/exe_0a/files/outputs/a%20b.csv?signature=x.y.z"
    assert parse_input(url) == OutputRef("exe_0a", "a b.csv")
    url = "http://127.0.0.1:8000/v1/sessions/ses_x/files/data/rows.csv"
    assert parse_input(url) == SessionFileRef("ses_x", "data/rows.csv")
    for url in (
        "https://example.org/data.csv",
        "https://api.example/v1/executions/exe_0a/files/outputs/%2e%2e/x",
        "https://api.example/v1/executions/exe_0a/files/image-0.png",
    ):
        with pytest.raises(ValidationError, match="code-exec fetches no URL"):
            ExecuteRequest(code="1", inputs=[url])
    with pytest.raises(ValidationError, match="at most 20 inputs"):
        ExecuteRequest(code="1", inputs=[output_uri("exe_00", f"f{i}") for i in range(21)])


async def test_a_sessions_file_is_an_input_of_its_owners_runs_and_sessions(
    make_executor: Any,
) -> None:
    executor = await make_executor()
    first = await executor.open_session(Language.PYTHON, "alice")
    await executor.execute(
        ExecuteRequest(
            code="open('data/rows.csv', 'w').write('x\\n1\\n2\\n')",
            session_id=first.session_id,
            files={"data/.keep": ""},
        ),
        "alice",
    )
    uri = session_file_uri(first.session_id, "data/rows.csv")
    stateless = await executor.execute(
        ExecuteRequest(code="open('data/rows.csv').read().split()", inputs=[uri]), "alice"
    )
    assert stateless.value == "['x', '1', '2']", stateless
    second = await executor.open_session(Language.PYTHON, "alice", SessionOptions(inputs=[uri]))
    seeded = await executor.execute(
        ExecuteRequest(code="len(open('data/rows.csv').read())", session_id=second.session_id),
        "alice",
    )
    assert seeded.value == "6", seeded
    with pytest.raises(NotFound):
        await executor.execute(ExecuteRequest(code="1", inputs=[uri]), "bob")
    with pytest.raises(NotFound, match="the session was not opened"):
        await executor.open_session(Language.PYTHON, "bob", SessionOptions(inputs=[uri]))
    assert await executor.list_sessions("bob") == []
    missing = session_file_uri(first.session_id, "nope.txt")
    with pytest.raises(NotFound):
        await executor.execute(ExecuteRequest(code="1", inputs=[missing]), "alice")


async def test_binary_files_travel_inline_as_base64(make_executor: Any) -> None:
    executor = await make_executor()
    blob = bytes(range(256)) * 3
    request = ExecuteRequest.model_validate(
        {
            "code": "import hashlib\nhashlib.sha256(open('in/blob.bin','rb').read()).hexdigest()",
            "files": {"in/blob.bin": {"base64": base64.encodebytes(blob).decode()}, "t.txt": "hi"},
        }
    )
    result = await executor.execute(request, "alice")
    assert result.value == repr(hashlib.sha256(blob).hexdigest()), result
    args = RunCodeArgs.model_validate(
        {
            "code": "open('b.bin','rb').read()",
            "files": [
                {"path": "b.bin", "content": base64.b64encode(b"\x00\xff").decode(), "base64": True}
            ],
        }
    )
    assert (await executor.execute(args.to_request(), "alice")).value == "b'\\x00\\xff'"
    with pytest.raises(ValidationError, match="is not base64"):
        ExecuteRequest.model_validate({"code": "1", "files": {"a": {"base64": "not base64!"}}})
    with pytest.raises(ValidationError, match="content of 'b.bin' is not base64"):
        RunCodeArgs.model_validate(
            {"code": "1", "files": [{"path": "b.bin", "content": "@@", "base64": True}]}
        )
