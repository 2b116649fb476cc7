"""A package index on loopback for the tests: a PEP 503 Python index and an npm registry,
serving wheels and tarballs the test builds, and counting every request it gets.

No test may reach the internet; this stands in for PyPI and registry.npmjs.org, set as the
executor's CODE_EXEC_PYPI_INDEX_URL and CODE_EXEC_NPM_REGISTRY_URL.
"""

import base64
import hashlib
import io
import json
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(name: str, version: str, source: str, requires: tuple[str, ...] = ()) -> bytes:
    """A pure-Python wheel of one module, `name`, whose __init__ is source."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires
    )
    files = {
        f"{module}/__init__.py": source.encode(),
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: code-exec-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return out.getvalue()


def build_npm_tarball(name: str, version: str, source: str) -> bytes:
    """An npm package tarball: package/package.json and package/index.js (source)."""
    files = {
        "package/package.json": json.dumps(
            {"name": name, "version": version, "main": "index.js"}
        ).encode(),
        "package/index.js": source.encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class PackageIndex:
    """What the index serves, and what it was asked for."""

    wheels: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # project: files
    npm: dict[str, dict[str, bytes]] = field(default_factory=dict)  # package: {version: tgz}
    requests: list[str] = field(default_factory=list)
    url: str = ""
    tamper: set[str] = field(default_factory=set)  # file names served with other bytes
    huge_pages: set[str] = field(default_factory=set)  # projects whose page is 40 MiB
    stalled: set[str] = field(default_factory=set)  # file names answered only after 30 s

    def add_wheel(
        self, name: str, version: str, source: str, requires: tuple[str, ...] = ()
    ) -> None:
        """Serve a wheel of name==version."""
        wheel = build_wheel(name, version, source, requires)
        file_name = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        self.wheels.setdefault(name.lower(), []).append((file_name, wheel))

    def add_wheel_file(self, project: str, file_name: str, data: bytes) -> None:
        """Serve a wheel made elsewhere (one pip downloaded) as a file of project."""
        self.wheels.setdefault(project.lower().replace("_", "-"), []).append((file_name, data))

    def add_npm(self, name: str, version: str, source: str) -> None:
        """Serve an npm package name@version."""
        self.npm.setdefault(name, {})[version] = build_npm_tarball(name, version, source)

    @property
    def pypi_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def npm_url(self) -> str:
        return f"{self.url}/npm/"

    def files_fetched(self) -> list[str]:
        """The package files (not pages) that were asked for."""
        return [path for path in self.requests if path.startswith(("/files/", "/npm-files/"))]

    def _response(self, path: str) -> tuple[int, str, bytes]:
        parts = [part for part in path.split("/") if part]
        match parts:
            case ["simple", project] if project in self.huge_pages:
                return 200, "text/html", b"<html>" + b"<!-- padding -->" * (40 << 16)
            case ["simple", project]:
                files = self.wheels.get(project.lower())
                if files is None:
                    return 404, "text/plain", b"no such project\n"
                links = "".join(
                    f'<a href="../../files/{file_name}#sha256={hashlib.sha256(data).hexdigest()}"'
                    f' data-requires-python="&gt;=3.8">{file_name}</a>\n'
                    for file_name, data in files
                )
                return 200, "text/html", f"<html><body>{links}</body></html>".encode()
            case ["files", file_name]:
                for files in self.wheels.values():
                    for name, data in files:
                        if name == file_name:
                            body = data + b"x" if name in self.tamper else data
                            return 200, "application/octet-stream", body
            case ["npm", name]:
                versions = self.npm.get(name)
                if versions is None:
                    return 404, "application/json", b'{"error": "Not found"}'
                document = {
                    "name": name,
                    "dist-tags": {"latest": sorted(versions)[-1]},
                    "versions": {
                        version: {
                            "name": name,
                            "version": version,
                            "dist": {
                                "tarball": f"{self.url}/npm-files/{name}-{version}.tgz",
                                "integrity": "sha512-"
                                + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                            },
                        }
                        for version, data in versions.items()
                    },
                }
                return 200, "application/json", json.dumps(document).encode()
            case ["npm-files", file_name]:
                for name, versions in self.npm.items():
                    for version, data in versions.items():
                        if file_name == f"{name}-{version}.tgz":
                            return 200, "application/octet-stream", data
        return 404, "text/plain", b"not found\n"


@contextmanager
def serve_index(index: PackageIndex) -> Iterator[PackageIndex]:
    """Serve index on 127.0.0.1 (a free port) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            index.requests.append(self.path)
            if self.path.rsplit("/", 1)[-1] in index.stalled:
                time.sleep(30)
            status, content_type, body = index._response(self.path.split("?")[0])
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    index.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
