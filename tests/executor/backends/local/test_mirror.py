"""The package mirror on its own, against the tests' index on loopback: what a sandbox's
request can and cannot make the executor fetch or hold."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.backends.local.egress import RequestError
from executor.backends.local.mirror import MirrorConfig, PackageMirror
from tests.package_index import PackageIndex, serve_index

pytestmark = pytest.mark.anyio


class Collect:
    """A sink that keeps what the mirror answers."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        await asyncio.sleep(0)


@pytest.fixture
def index() -> Iterator[PackageIndex]:
    packages = PackageIndex()
    packages.add_wheel("tinypkg", "1.0", "VALUE = 1\n")
    packages.huge_pages.add("huge")
    with serve_index(packages) as served:
        yield served


@pytest.fixture
async def mirror(index: PackageIndex, tmp_path: Path) -> PackageMirror:
    config = MirrorConfig(
        pypi_url=index.pypi_url,
        npm_url=index.npm_url,
        cache_dir=tmp_path,
        cache_bytes=1 << 20,
        page_ttl_s=600,
        max_file_bytes=1 << 20,
    )
    made = PackageMirror(config)
    yield made
    await made.close()


async def test_a_page_is_rewritten_to_the_mirror_and_kept(
    mirror: PackageMirror, index: PackageIndex
) -> None:
    sink = Collect()
    await mirror.serve("/pypi/simple/TinyPkg/", sink)
    page = bytes(sink.data)
    assert page.startswith(b"HTTP/1.1 200 OK") and b'href="/pypi/files/sha256/' in page
    assert index.url.encode() not in page  # no link leads anywhere but the mirror
    await mirror.serve("/pypi/simple/tinypkg/", Collect())
    assert index.requests == ["/simple/tinypkg/"]  # the second time, from memory


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/pypi/files/sha256/" + "0" * 64 + "/x.whl", 404),  # a digest no page named
        ("/pypi/files/sha256/../../../etc/passwd/x", 404),
        ("/pypi/files/md5/" + "0" * 32 + "/x.whl", 400),
        ("/pypi/simple/a%2fb/", 400),
        ("/pypi/simple/" + "a" * 300 + "/", 400),
        ("/npm/..%2f..%2fadmin", 400),
        ("/elsewhere", 404),
    ],
)
async def test_a_request_cannot_make_the_mirror_fetch_what_no_index_named(
    mirror: PackageMirror, index: PackageIndex, path: str, status: int
) -> None:
    with pytest.raises(RequestError) as refused:
        await mirror.serve(path, Collect())
    assert refused.value.status == status
    assert index.requests == []


async def test_an_oversized_page_is_refused_and_not_kept(
    mirror: PackageMirror, index: PackageIndex
) -> None:
    with pytest.raises(RequestError, match="too large") as refused:
        await mirror.serve("/pypi/simple/huge/", Collect())
    assert refused.value.status == 502
    assert mirror.stats()["pages_kept"] == 0
