"""The package mirror: the operator's Python and npm indexes, fetched by the executor and
served to sandboxes from a content-addressed cache.

A sandbox never talks to an index itself. pip's index URL and npm's registry point at the
egress proxy (egress.py), which hands /pypi/... and /npm/... here:
- /pypi/simple/<project>/ : the index's page for the project (PEP 503 HTML), with each file's
  link rewritten to /pypi/files/sha256/<digest>/<name>. Links without a sha256 are dropped.
- /npm/<name> : the registry's metadata for the package (the abbreviated document npm asks
  for), each version's tarball rewritten to /npm/-/files/sha512/<digest>/<name>. Versions
  without an sha512 integrity are dropped.
- .../files/<algorithm>/<digest>/<name> : the file, from the cache, or fetched from the URL
  the index gave for that digest, checked against it, and stored under it.
A file is fetched only from a URL an index page named for that digest, and stored only once
its bytes match the digest, so one sandbox cannot put a file in the cache that another gets
instead of the real one, nor make the executor fetch a URL of its choosing. Pages are kept for
CODE_EXEC_PACKAGE_INDEX_TTL_S; files until the cache is over CODE_EXEC_PACKAGE_CACHE_MB, least
recently used first: a second install of the same version within the page's lifetime does
not touch the network.
"""

import asyncio
import base64
import hashlib
import html
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

from executor.backends.local.egress import RequestError, Sink, respond
from executor.backends.local.policy import PROXY_URL

log = logging.getLogger(__name__)

_MAX_PAGE_BYTES = 32 * 1024 * 1024  # the largest PyPI pages and npm documents are a few MiB
# Memory the mirror may hold: pages kept (their bytes in all), pages being fetched at once
# (each up to _MAX_PAGE_BYTES), and the file URLs the pages named.
_PAGE_BYTES_KEPT = 64 * 1024 * 1024
_PAGE_FETCHES = 4
_URLS_KEPT = 100_000
_PROJECT = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_NPM_NAME = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9._~-][a-z0-9._~-]*$", re.IGNORECASE)
_DIGEST = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}
_FILE_NAME = re.compile(r"^[A-Za-z0-9._+!-]{1,255}$")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class MirrorConfig:
    """Where the indexes are and what the cache may hold."""

    pypi_url: str
    npm_url: str
    cache_dir: Path
    cache_bytes: int
    page_ttl_s: float
    max_file_bytes: int


class _Links(HTMLParser):
    """The anchors of a PEP 503 page: (href, data-requires-python, data-yanked)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str | None, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        values = dict(attrs)
        if values.get("href"):
            self.links.append(
                (
                    values["href"] or "",
                    values.get("data-requires-python"),
                    values.get("data-yanked"),
                )
            )


def _normalise(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


class PackageMirror:
    """The mirror of one executor; serve() is egress.py's MirrorHandler."""

    def __init__(self, config: MirrorConfig, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._client = client or httpx.AsyncClient(follow_redirects=True, timeout=30.0)
        self._pages: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._urls: OrderedDict[tuple[str, str], str] = OrderedDict()  # (algorithm, digest)
        self._fetching: dict[tuple[str, str], asyncio.Future[Path]] = {}
        self._page_locks: dict[str, asyncio.Lock] = {}
        self._page_bytes = 0
        self._fetches = asyncio.Semaphore(_PAGE_FETCHES)
        for algorithm in _DIGEST:
            (config.cache_dir / algorithm).mkdir(parents=True, exist_ok=True)
        self.upstream_requests = 0  # what reached an index, for /health and the benchmarks

    async def close(self) -> None:
        """Close the upstream connections."""
        await self._client.aclose()

    async def serve(self, path: str, writer: Sink) -> None:
        """Answer a sandbox's request for path (the proxy's MirrorHandler)."""
        path = urlsplit(path).path
        parts = [unquote(part) for part in path.split("/")[1:]]
        match parts:
            case ["pypi", "simple", project, ""] | ["pypi", "simple", project]:
                if not _PROJECT.match(project):
                    raise RequestError(400, "not a project name")
                body = await self._page(f"pypi:{_normalise(project)}", self._pypi_page)
                await respond(writer, 200, body, "text/html; charset=utf-8")
            case ["pypi", "files", algorithm, digest, name]:
                await self._send_file(algorithm, digest, name, writer)
            case ["npm", "-", "files", algorithm, digest, name]:
                await self._send_file(algorithm, digest, name, writer)
            case ["npm", scope, name] if scope.startswith("@"):
                await self._npm(f"{scope}/{name}", writer)
            case ["npm", name] if name and not name.startswith("-"):
                await self._npm(name, writer)
            case _:
                raise RequestError(404, f"the package mirror has nothing at {path[:200]}")

    async def _npm(self, name: str, writer: Sink) -> None:
        if not _NPM_NAME.match(name):
            raise RequestError(400, "not an npm package name")
        body = await self._page(f"npm:{name.lower()}", self._npm_document)
        await respond(writer, 200, body, "application/json")

    # --- pages ---

    async def _page(self, key: str, fetch: Callable[[str], Awaitable[bytes]]) -> bytes:
        """A page from memory while it is fresh, else fetched once for all who wait on it."""
        lock = self._page_locks.setdefault(key, asyncio.Lock())
        async with lock:
            kept = self._pages.get(key)
            if kept is not None and kept[0] > time.monotonic():
                self._pages.move_to_end(key)
                return kept[1]
            async with self._fetches:
                body = await fetch(key.split(":", 1)[1])
            stale = self._pages.pop(key, None)  # (eviction may have taken it meanwhile)
            if stale is not None:
                self._page_bytes -= len(stale[1])
            self._pages[key] = (time.monotonic() + self._config.page_ttl_s, body)
            self._pages.move_to_end(key)
            self._page_bytes += len(body)
            while self._page_bytes > _PAGE_BYTES_KEPT and self._pages:
                self._page_bytes -= len(self._pages.popitem(last=False)[1][1])
        self._page_locks.pop(key, None)
        return body

    async def _get(self, url: str, accept: str) -> tuple[str, bytes]:
        """The body at url (bounded), and the URL it came from after redirects."""
        self.upstream_requests += 1
        try:
            async with self._client.stream("GET", url, headers={"Accept": accept}) as response:
                if response.status_code == 404:
                    raise RequestError(404, f"the index has no {url.rsplit('/', 2)[-2] or url}")
                if response.status_code != 200:
                    raise RequestError(502, f"the index answered {response.status_code} for {url}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_PAGE_BYTES:
                        raise RequestError(502, f"the index's page for {url} is too large")
                return str(response.url), bytes(body)
        except httpx.HTTPError as exc:
            raise RequestError(502, f"the index at {url} cannot be reached: {exc}") from None

    def _remember(self, algorithm: str, digest: str, url: str) -> None:
        self._urls[(algorithm, digest)] = url
        self._urls.move_to_end((algorithm, digest))
        while len(self._urls) > _URLS_KEPT:
            self._urls.popitem(last=False)

    async def _pypi_page(self, project: str) -> bytes:
        url, body = await self._get(
            f"{self._config.pypi_url.rstrip('/')}/{project}/",
            "application/vnd.pypi.simple.v1+html, text/html;q=0.1",
        )
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        rows = []
        for href, requires_python, yanked in parser.links:
            target = urljoin(url, href)
            file_url, _, fragment = target.partition("#")
            digest = (
                dict(item.partition("=")[::2] for item in fragment.split("&") if "=" in item)
                .get("sha256", "")
                .lower()
            )
            name = unquote(urlsplit(file_url).path.rsplit("/", 1)[-1])
            if not _DIGEST["sha256"].match(digest) or not _FILE_NAME.match(name):
                continue
            self._remember("sha256", digest, file_url)
            attributes = ""
            if requires_python is not None:
                attributes += f' data-requires-python="{html.escape(requires_python)}"'
            if yanked is not None:
                attributes += f' data-yanked="{html.escape(yanked)}"'
            rows.append(
                f'<a href="/pypi/files/sha256/{digest}/{quote(name)}#sha256={digest}"'
                f"{attributes}>{html.escape(name)}</a><br/>"
            )
        return (
            '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0">'
            f"<title>{html.escape(project)}</title></head><body>\n"
            + "\n".join(rows)
            + "\n</body></html>\n"
        ).encode()

    async def _npm_document(self, name: str) -> bytes:
        _, body = await self._get(
            f"{self._config.npm_url.rstrip('/')}/{name.replace('/', '%2f')}",
            "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8",
        )
        try:
            document = json.loads(body)
            versions = document["versions"]
        except (ValueError, KeyError, TypeError):
            raise RequestError(502, f"the registry's document for {name} is not npm's") from None
        kept = {}
        for version, manifest in versions.items():
            dist = manifest.get("dist") if isinstance(manifest, dict) else None
            if not isinstance(dist, dict):
                continue
            integrity, tarball = dist.get("integrity", ""), dist.get("tarball")
            sha512 = next(
                (part[7:] for part in str(integrity).split() if part.startswith("sha512-")), None
            )
            if not sha512 or not isinstance(tarball, str):
                continue
            try:
                digest = base64.b64decode(sha512, validate=True).hex()
            except ValueError:
                continue
            file_name = tarball.rsplit("/", 1)[-1]
            if not _DIGEST["sha512"].match(digest) or not _FILE_NAME.match(file_name):
                continue
            self._remember("sha512", digest, tarball)
            dist = {**dist, "tarball": f"{PROXY_URL}/npm/-/files/sha512/{digest}/{file_name}"}
            dist.pop("signatures", None)
            kept[version] = {**manifest, "dist": dist}
        document["versions"] = kept
        tags = document.get("dist-tags")
        if isinstance(tags, dict):
            document["dist-tags"] = {tag: v for tag, v in tags.items() if v in kept}
        return json.dumps(document).encode()

    # --- files ---

    async def _send_file(
        self, algorithm: str, digest: str, name: str, writer: Sink
    ) -> None:
        if algorithm not in _DIGEST or not _DIGEST[algorithm].match(digest):
            raise RequestError(400, "not a digest the mirror keeps files by")
        path = await self._file(algorithm, digest)
        size = path.stat().st_size
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        with path.open("rb") as f:  # the name stays valid: eviction unlinks, we keep the fd
            while chunk := await asyncio.to_thread(f.read, _CHUNK):
                writer.write(chunk)
                await writer.drain()

    async def _file(self, algorithm: str, digest: str) -> Path:
        """The cached file with this digest, fetched first when it is not there."""
        path = self._config.cache_dir / algorithm / digest
        key = (algorithm, digest)
        if path.exists():
            os.utime(path)  # most recently used
            return path
        waiting = self._fetching.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        url = self._urls.get(key)
        if url is None:
            raise RequestError(
                404, "the mirror knows no file with this digest; ask for the index page first"
            )
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._fetching[key] = future
        try:
            await self._download(url, algorithm, digest, path)
            future.set_result(path)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._fetching[key]
        await asyncio.to_thread(self._evict)
        return path

    async def _download(self, url: str, algorithm: str, digest: str, path: Path) -> None:
        partial = path.with_name(f".{digest}.{os.getpid()}.{id(path)}")
        hasher = hashlib.new(algorithm)
        size = 0
        self.upstream_requests += 1
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RequestError(502, f"the index answered {response.status_code} for {url}")
                with partial.open("wb") as f:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        size += len(chunk)
                        if size > self._config.max_file_bytes:
                            raise RequestError(
                                502,
                                f"{url} is over {self._config.max_file_bytes // 2**20} MiB "
                                "(CODE_EXEC_PACKAGE_MAX_FILE_MB)",
                            )
                        hasher.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
            if hasher.hexdigest() != digest:
                log.warning("package mirror: %s does not match its %s; not kept", url, algorithm)
                raise RequestError(502, f"{url} does not match the digest its index gave")
            os.replace(partial, path)
            log.info("package mirror: fetched %s (%d bytes)", url, size)
        except httpx.HTTPError as exc:
            raise RequestError(502, f"{url} cannot be fetched: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)

    def _evict(self) -> None:
        """Least recently used files out until the cache fits its size (blocking)."""
        files = []
        for algorithm in _DIGEST:
            for entry in os.scandir(self._config.cache_dir / algorithm):
                if entry.is_file() and not entry.name.startswith("."):
                    info = entry.stat()
                    files.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, file_path in sorted(files):
            if total <= self._config.cache_bytes:
                break
            Path(file_path).unlink(missing_ok=True)
            total -= size

    def stats(self) -> dict[str, int]:
        """What /health shows of the cache."""
        return {"upstream_requests": self.upstream_requests, "pages_kept": len(self._pages)}
