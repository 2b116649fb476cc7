"""Files from "make a file" to the user holding its bytes, once per front-end (issue 17).

Against a real `code-exec serve` on loopback with real sandboxes: one run writes a CSV and a
PDF chart under /home/user/outputs/; each front-end shows what the model saw of it (and its
o200k tokens) and how the user gets the bytes (checked equal to what the run wrote). Then a
later run takes the CSV by reference, and a session's file is listed as an MCP resource.
Not a timing: `make bench` prints it so that the numbers in BENCHMARKS.md can be re-made.
"""

import asyncio
import base64
import hashlib
import json
from typing import Any

import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from bench.common import api_process, bench_token, machine
from executor.core.tokens import get_encoding

CSV = b"city,temp\nOslo,4\nRome,18\n"
CODE = (
    "import os\nimport matplotlib.pyplot as plt\nos.makedirs('outputs', exist_ok=True)\n"
    f"open('outputs/clean.csv', 'wb').write({CSV!r})\n"
    "plt.bar(['Oslo', 'Rome'], [4, 18])\nplt.savefig('outputs/chart.pdf')\nplt.close()\n"
    "print('saved 2 files')"
)
LATER = "import csv\nprint(max(csv.DictReader(open('clean.csv')), key=lambda r: int(r['temp'])))"
ENCODING = get_encoding()


def tokens(text: str) -> int:
    """o200k tokens of a text."""
    return len(ENCODING.encode_ordinary(text))


def shown(title: str, text: str) -> None:
    """A block of what the model saw, with its token count."""
    print(f"\n**{title}** ({tokens(text)} tokens):\n\n```\n{text}\n```")


def check_bytes(name: str, data: bytes, pdf_size: int | None = None) -> str:
    """That the bytes are the run's: the CSV exactly, the PDF a PDF of the size listed."""
    if name == "clean.csv":
        assert data == CSV, data[:100]
    else:
        assert data.startswith(b"%PDF") and (pdf_size is None or len(data) == pdf_size)
    return f"{name}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}"


async def mcp_flow(url: str, headers: dict[str, str]) -> None:
    """The official MCP client over streamable HTTP."""
    print("\n### MCP (official client, streamable HTTP)")
    changed: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification):
            changed.append(message.root.method)

    async with (
        httpx.AsyncClient(headers=headers, timeout=120) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        result = await session.call_tool("run_code", {"code": CODE})
        text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
        links = [c for c in result.content if isinstance(c, types.ResourceLink)]
        shown("run_code result, text content", text)
        blocks = json.dumps([link.model_dump(mode="json", exclude_none=True) for link in links])
        print(f"\nand {len(links)} resource_link blocks ({tokens(blocks)} tokens as JSON)")
        held = []
        for link in links:
            read_back = await session.read_resource(link.uri)
            content = read_back.contents[0]
            data = (
                content.text.encode()
                if isinstance(content, types.TextResourceContents)
                else base64.b64decode(content.blob)
            )
            held.append(check_bytes(link.name, data, link.size))
        print("\nthe user (the host application) holds, by resources/read: " + "; ".join(held))
        csv_uri = next(str(link.uri) for link in links if link.name == "clean.csv")
        later = await session.call_tool("run_code", {"code": LATER, "inputs": [csv_uri]})
        shown("a later run with inputs=[the CSV's URI]", later.content[0].text)  # type: ignore[union-attr]
        opened = await session.call_tool("open_session", {})
        sid = (opened.structuredContent or {})["session_id"]
        await session.call_tool(
            "run_code", {"code": "open('notes.md', 'w').write('# kept\\n')", "session_id": sid}
        )
        listed = (await session.list_resources()).resources
        announced = changed.count("notifications/resources/list_changed")
        print(
            f"\nsession files: after a run wrote notes.md the client got {announced} "
            "notifications/resources/list_changed; resources/list: "
            + ", ".join(f"{r.name} {r.uri}" for r in listed)
        )
        await session.call_tool("close_session", {"session_id": sid})


def openai_flows(url: str, headers: dict[str, str]) -> None:
    """/v1/tools/call in Chat and Responses shapes, and the REST API."""
    arguments = json.dumps({"code": CODE})
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        print("\n### OpenAI Chat Completions (POST /v1/tools/call)")
        chat = {
            "id": "c1",
            "type": "function",
            "function": {"name": "run_code", "arguments": arguments},
        }
        [message] = http.post("/v1/tools/call", json=chat).json()
        shown("tool message content", message["content"])
        urls = [
            line.split()[-1] for line in message["content"].splitlines() if line.startswith("- ")
        ]
        held = [check_bytes(u.rsplit("/", 1)[-1], http.get(u).content) for u in urls]
        print("\nthe user holds, by GET with the bearer token: " + "; ".join(held))
        csv_url = next(u for u in urls if u.endswith("clean.csv"))
        later = {
            "id": "c2",
            "type": "function",
            "function": {
                "name": "run_code",
                "arguments": json.dumps({"code": LATER, "inputs": [csv_url]}),
            },
        }
        [again] = http.post("/v1/tools/call", json=later).json()
        shown("a later run with inputs=[the CSV's URL]", again["content"])

        print("\n### OpenAI Responses (POST /v1/tools/call?files=embed)")
        call = {
            "type": "function_call",
            "call_id": "fc1",
            "name": "run_code",
            "arguments": arguments,
        }
        [item] = http.post("/v1/tools/call", params={"files": "embed"}, json=call).json()
        text, *files = item["output"]
        shown("function_call_output: input_text", text["text"])
        for f in files:
            header, encoded = f["file_data"].split(",", 1)
            data = base64.b64decode(encoded)
            print(f"\ninput_file {f['filename']} ({header}): {check_bytes(f['filename'], data)}")
        [linked] = http.post("/v1/tools/call", json=call).json()
        alone = tokens(linked["output"])
        print(f"\nwithout files=embed the output is the text alone ({alone} tokens)")

        print("\n### REST (POST /v1/code_interpreter/run)")
        ran = http.post(
            "/v1/code_interpreter/run", json={"code": CODE, "language": "python"}
        ).json()
        print(f"\nresult files: {json.dumps(ran['files'])}")
        held = []
        for f in ran["files"]:
            path = f"/v1/executions/{ran['execution_id']}/files/outputs/{f['name']}"
            held.append(check_bytes(f["name"], http.get(path).content, f["size"]))
            signed = http.post(f"{path}/url").json()
            anonymous = httpx.get(signed["url"], timeout=30)
            assert anonymous.status_code == 200 and anonymous.content == http.get(path).content
        print("\nthe user holds, by GET with the token: " + "; ".join(held))
        print(
            f"and by a signed URL without a token (valid until {signed['expires_at']}): "
            f"{signed['url'].split('?')[0]}?signature=…"
        )
        stranger = {"Authorization": f"Bearer {bench_token('stranger')}"}
        refused = httpx.get(url + path, headers=stranger, timeout=30).status_code
        print(f"another user's GET of the same file: {refused}")


def main() -> None:
    """Print the flows."""
    print(f"machine: {machine()}")
    headers = {"Authorization": f"Bearer {bench_token()}"}
    with api_process("serve") as url:
        asyncio.run(mcp_flow(url, headers))
        openai_flows(url, headers)


if __name__ == "__main__":
    main()
