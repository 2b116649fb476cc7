"""A request's network and packages (issue 16): what is refused before any sandbox is used
(fast, over the fake backend), and installs in real sandboxes from the tests' own index."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from executor.backends.base import ByteAllowance
from executor.errors import InvalidRequest
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.network import Network
from schemas.sessions import SessionOptions
from tests.executor.backends.local.test_egress import TEST_HTTP
from tests.netns import netns_available, netns_host
from tests.package_index import PackageIndex, serve_index

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "spec",
    [
        "-e git+https://x/y",
        "--index-url=http://evil/",
        "https://x.org/p.whl",
        "./local",
        "../x.tar.gz",
        "a b",
        "x; os_name=='nt'",
        "pkg @ https://x",
        "",
    ],
)
def test_a_package_spec_is_a_name_and_a_version_only(spec: str) -> None:
    with pytest.raises(ValidationError, match="URLs, paths and options are not accepted"):
        ExecuteRequest(code="1", packages=[spec])


@pytest.mark.parametrize(
    "spec",
    [
        "scipy",
        "pandas>=2.2,<3",
        "numpy==2.1.*",
        "requests[socks]==2.32.3",
        "lodash",
        "zod@^3",
        "@types/node@20",
    ],
)
def test_usual_specs_are_accepted(spec: str) -> None:
    assert ExecuteRequest(code="1", packages=[spec]).packages == [spec]


def test_at_most_twenty_packages() -> None:
    with pytest.raises(ValidationError, match="at most 20"):
        ExecuteRequest(code="1", packages=[f"p{i}" for i in range(21)])


async def test_without_a_network_setting_packages_and_networks_are_refused(
    make_any_executor: Any,
) -> None:
    executor = await make_any_executor()
    with pytest.raises(InvalidRequest, match=r"needs network 'packages'.*CODE_EXEC_NETWORK=none"):
        await executor.execute(ExecuteRequest(code="1", packages=["scipy"]), "u")
    with pytest.raises(InvalidRequest, match=r"above what this executor allows \('none'\)"):
        await executor.execute(ExecuteRequest(code="1", network=Network.PACKAGES), "u")
    with pytest.raises(InvalidRequest, match="needs network 'packages'"):
        await executor.open_session(Language.PYTHON, "u", SessionOptions(packages=["scipy"]))
    assert len(executor.sessions) == 0


async def test_packages_are_for_python_and_javascript_in_their_own_specs(
    make_executor: Any,
) -> None:
    executor = await make_executor(network="packages")
    with pytest.raises(InvalidRequest, match="python \\(pip\\) and javascript \\(npm\\), not bash"):
        await executor.execute(ExecuteRequest(code="true", language="bash", packages=["jq"]), "u")
    with pytest.raises(InvalidRequest, match="not a npm package spec"):
        await executor.execute(
            ExecuteRequest(code="1", language="javascript", packages=["Flask>=3"]), "u"
        )


async def test_a_session_bounds_its_runs(make_executor: Any) -> None:
    executor = await make_executor(network="packages")
    info = await executor.open_session(Language.PYTHON, "u", SessionOptions(network=Network.NONE))
    assert info.network is Network.NONE
    with pytest.raises(InvalidRequest, match=r"above what this session allows \('none'\)"):
        await executor.execute(
            ExecuteRequest(code="1", session_id=info.session_id, network=Network.PACKAGES), "u"
        )
    with pytest.raises(InvalidRequest, match="needs network 'packages' or more, and this run has"):
        await executor.execute(
            ExecuteRequest(code="1", session_id=info.session_id, packages=["tinypkg"]), "u"
        )


# --- installs in real sandboxes ---


@pytest.fixture
def index() -> Iterator[PackageIndex]:
    packages = PackageIndex()
    packages.add_wheel("tinypkg", "1.1", "VALUE = 42\n")
    packages.add_wheel("tinyapp", "2.0", "import tinypkg\nANSWER = tinypkg.VALUE\n", ("tinypkg",))
    packages.add_npm("tiny-npm", "1.0.0", "module.exports = { seven: 7 };\n")
    packages.add_wheel("slowpkg", "1.0", "X = 1\n")
    packages.stalled.add("slowpkg-1.0-py3-none-any.whl")
    with serve_index(packages) as served:
        yield served


@pytest.fixture
async def packages_executor(make_executor: Any, index: PackageIndex) -> Any:
    return await make_executor(
        network="packages", pypi_index_url=index.pypi_url, npm_registry_url=index.npm_url
    )


@pytest.mark.slow
async def test_a_run_installs_its_packages_before_its_code(packages_executor: Any) -> None:
    result = await packages_executor.execute(
        ExecuteRequest(code="import tinyapp\ntinyapp.ANSWER", packages=["tinyapp"]), "u"
    )
    assert (result.value, result.error, result.exit_code) == ("42", None, 0)


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/bin/npm").exists(),
    reason="npm is not installed on this host (apt-get install npm)",
)
async def test_a_javascript_run_installs_its_npm_packages(packages_executor: Any) -> None:
    js = await packages_executor.execute(
        ExecuteRequest(
            code="console.log(require('tiny-npm').seven)",
            language="javascript",
            packages=["tiny-npm@1"],
            timeout=120,
        ),
        "u",
    )
    assert js.stdout.strip() == "7", js


@pytest.mark.slow
async def test_a_failed_install_says_which_package_and_why_and_runs_nothing(
    packages_executor: Any,
) -> None:
    result = await packages_executor.execute(
        ExecuteRequest(code="print('ran')", packages=["tinypkg", "no-such-package==1.0"]), "u"
    )
    assert result.error is not None and result.error.name == "PackageInstallError"
    assert result.error.value.startswith("pip could not install tinypkg, no-such-package==1.0: ")
    assert "no-such-package" in result.error.value and "ran" not in result.stdout
    assert result.exit_code != 0


@pytest.mark.slow
async def test_an_install_that_does_not_finish_in_the_runs_time_says_so(
    packages_executor: Any,
) -> None:
    result = await packages_executor.execute(
        ExecuteRequest(code="print('ran')", packages=["slowpkg"], timeout=3), "u"
    )
    assert result.error is not None and result.error.name == "PackageInstallError"
    assert result.error.value == (
        "installing slowpkg did not finish within 3 s; pass a longer timeout, or fewer packages"
    )
    assert "ran" not in result.stdout and result.timed_out


@pytest.mark.slow
async def test_a_session_opens_with_its_packages_and_its_runs_may_narrow(
    packages_executor: Any, index: PackageIndex
) -> None:
    info = await packages_executor.open_session(
        Language.PYTHON, "u", SessionOptions(packages=["tinyapp"])
    )
    assert info.network is Network.PACKAGES
    run = lambda code, **kw: packages_executor.execute(  # noqa: E731
        ExecuteRequest(code=code, session_id=info.session_id, **kw), "u"
    )
    assert (await run("import tinyapp\ntinyapp.ANSWER")).value == "42"
    # This run narrows to none: pip in it reaches nothing (the mirror refuses it; pip says
    # only that it found no version: it logs an index's refusal at debug level).
    asked = len(index.requests)
    narrowed = await run(
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-d', "
        "'/tmp/d', 'tinyapp'], capture_output=True, text=True)\n"
        "print(r.returncode, r.stderr)",
        network=Network.NONE,
    )
    assert narrowed.stdout.startswith("1 ") and "No matching distribution" in narrowed.stdout
    assert len(index.requests) == asked
    with pytest.raises(InvalidRequest, match="the session was not opened: pip could not install"):
        await packages_executor.open_session(
            Language.PYTHON, "u", SessionOptions(packages=["no-such-package"])
        )
    assert len(packages_executor.sessions) == 1


def test_a_users_allowance_holds_for_its_window_then_renews() -> None:
    allowance = ByteAllowance(limit=100, window_s=3600)
    assert allowance.take(60) and allowance.take(40)
    assert not allowance.take(1)
    assert "for the hour (CODE_EXEC_EGRESS_USER_MB_PER_HOUR)" in allowance.reason()
    allowance.window_start -= 3600  # the hour is over
    assert allowance.take(100)


@pytest.fixture
def test_http_host() -> Iterator[str]:
    if not netns_available():
        pytest.skip("a test host needs root and iproute2 (ip netns, veth)")
    with netns_host(TEST_HTTP, 8080, tag="pu") as address:
        yield address


@pytest.mark.slow
async def test_a_users_runs_share_one_network_allowance(
    make_executor: Any, test_http_host: str
) -> None:
    executor = await make_executor(
        network="allowlist",
        network_allowlist=[f"{test_http_host}:8080"],
        egress_user_mb_per_hour=1,
    )
    fetch = (
        "import urllib.request\n"
        "try:\n"
        f"    print(len(urllib.request.urlopen('http://{test_http_host}:8080/{{path}}').read()))\n"
        "except Exception as exc:\n"
        "    print('refused', exc)\n"
    )
    first = await executor.execute(ExecuteRequest(code=fetch.replace("{path}", "big")), "alice")
    assert "refused" in first.stdout or int(first.stdout) < 2 << 20, first
    second = await executor.execute(ExecuteRequest(code=fetch.replace("{path}", "hello")), "alice")
    assert "refused" in second.stdout and "this user's runs moved their 1 MiB" in second.stdout
    other = await executor.execute(ExecuteRequest(code=fetch.replace("{path}", "hello")), "bob")
    assert other.stdout.strip() == str(len(b"hello from the test host\n")), other


@pytest.mark.slow
async def test_a_request_or_a_session_narrows_the_allowlist(
    make_executor: Any, test_http_host: str
) -> None:
    host = f"{test_http_host}:8080"
    executor = await make_executor(network="allowlist", network_allowlist=[host, "example.com"])
    fetch = (
        "import urllib.request\n"
        "try:\n"
        f"    print(urllib.request.urlopen('http://{host}/hello').read().decode().strip())\n"
        "except Exception as exc:\n"
        "    print('refused', exc)\n"
    )
    reached = await executor.execute(ExecuteRequest(code=fetch), "u")
    assert reached.stdout.strip() == "hello from the test host"
    narrowed = await executor.execute(ExecuteRequest(code=fetch, allow_hosts=["example.com"]), "u")
    assert "refused" in narrowed.stdout and "not in this run's network allowlist (example.com)" in (
        narrowed.stdout
    )
    with pytest.raises(InvalidRequest, match=r"evil.org are outside the allowlist in force"):
        await executor.execute(ExecuteRequest(code=fetch, allow_hosts=["evil.org"]), "u")
    info = await executor.open_session(
        Language.PYTHON, "u", SessionOptions(network=Network.ALLOWLIST, allow_hosts=[host])
    )
    assert info.allow_hosts == [host]
    in_session = await executor.execute(ExecuteRequest(code=fetch, session_id=info.session_id), "u")
    assert in_session.stdout.strip() == "hello from the test host"
    with pytest.raises(InvalidRequest, match=r"outside the allowlist in force .*this session"):
        await executor.execute(
            ExecuteRequest(code=fetch, session_id=info.session_id, allow_hosts=["example.com"]),
            "u",
        )
