"""A run's network and the packages it asks for: checked against what the executor and the
session allow, and installed in the run's sandbox before its code.

The install is a run of its own in the same sandbox: pip (Python) or npm (JavaScript) through
the sandbox's egress proxy, which is set up for them (executor/backends/local/egress.py). A
failed install ends the request with a PackageInstallError result naming the package and
pip's or npm's own reason; the code does not run.
"""

import json

from executor.backends.base import RunAccess, RunOutcome, Sandbox
from executor.backends.capture import StreamCapture
from executor.errors import InvalidRequest
from schemas.execution import ExecutionError
from schemas.languages import Language
from schemas.network import Network, NetworkGrant, narrow_hosts
from schemas.packages import is_npm_spec, is_pip_spec

# What the install prints is kept for its error message only.
_INSTALL_OUTPUT_BYTES = 64 * 1024
_TAIL_LINES = 12

_PYTHON = """
def _code_exec_install(packages):
    import subprocess, sys
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-input", "--progress-bar", "off",
         "--quiet", *packages],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
    )
    sys.stderr.write(done.stdout[-8000:] + done.stderr[-8000:])
    if done.returncode:
        raise SystemExit(done.returncode)
try:
    _code_exec_install({packages})
finally:
    del _code_exec_install
"""

_JAVASCRIPT = """
{{
  const done = require('child_process').spawnSync(
    'npm', ['install', '--no-audit', '--no-fund', '--no-progress', ...{packages}],
    {{ cwd: require('os').homedir(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }});
  if (done.error) throw new Error(done.error.code === 'ENOENT'
    ? "npm is not installed on the executor's host (apt-get install npm)" : String(done.error));
  const out = String(done.stdout || '') + String(done.stderr || '');
  process.stderr.write(out.slice(-16000));
  if (done.status !== 0) throw new Error('npm exited with ' + (done.status ?? done.signal));
}}
"""

_TOOLS = {Language.PYTHON: "pip", Language.JAVASCRIPT: "npm"}


def run_network(
    requested: Network | None,
    requested_hosts: list[str] | None,
    ceiling: NetworkGrant,
    session: NetworkGrant | None = None,
) -> NetworkGrant:
    """The network a run (or a session) gets: what it asks for, within the session's and the
    executor's (ceiling: the operator's level and whole allowlist)."""
    bound = session if session is not None else ceiling
    level = bound.level if requested is None else requested
    where = "this session" if session is not None else "this executor"
    if not bound.level.covers(level):
        allowed = " or ".join(repr(each.value) for each in Network if bound.level.covers(each))
        raise InvalidRequest(
            f"network {level.value!r} is above what {where} allows ({bound.level.value!r}); "
            f"ask for {allowed}, or omit network"
        )
    if requested_hosts is None or level is not Network.ALLOWLIST:
        return NetworkGrant(level, bound.hosts if level is Network.ALLOWLIST else None)
    in_force = bound.hosts if bound.hosts is not None else ceiling.hosts or ()
    try:
        return NetworkGrant(level, narrow_hosts(in_force, requested_hosts))
    except ValueError as exc:
        raise InvalidRequest(f"{exc} ({where})") from None


def check_packages(packages: list[str], language: Language, network: Network) -> None:
    """InvalidRequest unless these packages can be installed for this language and network."""
    tool = _TOOLS.get(language)
    if tool is None:
        raise InvalidRequest(
            f"packages can be installed for python (pip) and javascript (npm), not "
            f"{language.value}; install from the code itself, or use one of those languages"
        )
    if not network.covers(Network.PACKAGES):
        raise InvalidRequest(
            f"installing packages needs network 'packages' or more, and this run has "
            f"{network.value!r}"
            + (
                " (the executor allows no more: CODE_EXEC_NETWORK=none); the runtime has "
                "numpy, pandas, scipy, scikit-learn, statsmodels, sympy, matplotlib, seaborn, "
                "pyarrow, openpyxl, requests, beautifulsoup4 and lxml"
                if network is Network.NONE
                else ""
            )
        )
    valid = is_pip_spec if language is Language.PYTHON else is_npm_spec
    wrong = [spec for spec in packages if not valid(spec)]
    if wrong:
        raise InvalidRequest(f"{', '.join(wrong)}: not a {tool} package spec for {language.value}")


async def install(
    sandbox: Sandbox,
    language: Language,
    packages: list[str],
    *,
    timeout: float,
    keep_state: bool,
    access: RunAccess,
) -> RunOutcome | None:
    """Install packages in sandbox; None when they are, else the outcome that reports why not
    (the request's result: its code is not run)."""
    template = _PYTHON if language is Language.PYTHON else _JAVASCRIPT
    stdout = StreamCapture(_INSTALL_OUTPUT_BYTES)
    stderr = StreamCapture(_INSTALL_OUTPUT_BYTES)
    outcome = await sandbox.run(
        template.format(packages=json.dumps(packages)),
        env={},
        timeout=timeout,
        keep_state=keep_state,
        stdout=stdout,
        stderr=stderr,
        access=RunAccess(access.network, access.allowance),  # no tools while installing
    )
    if outcome.exit_code == 0 and outcome.error is None and not outcome.timed_out:
        return None
    tool = _TOOLS[language]
    names = ", ".join(packages)
    if outcome.timed_out:
        value = (
            f"installing {names} did not finish within {timeout:g} s; pass a longer timeout, "
            "or fewer packages"
        )
    else:
        lines = [line for line in stderr.text().splitlines() if line.strip()]
        marked = [line for line in lines if line.startswith(("ERROR:", "npm error", "npm ERR!"))]
        if marked or lines:
            reason = (marked or lines)[-1]
        elif outcome.error is not None and outcome.error.value:
            reason = outcome.error.value.splitlines()[0]
        else:
            reason = "no output"
        value = f"{tool} could not install {names}: {reason.strip()[:500]}"
    failed = RunOutcome(
        stdout=StreamCapture(_INSTALL_OUTPUT_BYTES),
        stderr=stderr,
        exit_code=outcome.exit_code or 1,
        timed_out=outcome.timed_out,
        state_lost=outcome.state_lost,
    )
    failed.error = ExecutionError(
        name="PackageInstallError",
        value=value,
        traceback="\n".join(stderr.text().splitlines()[-_TAIL_LINES:]),
    )
    return failed
