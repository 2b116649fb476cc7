"""`code-exec`: run the service (everything, or one role), and manage tokens and keys."""

import argparse
import functools
import logging
import os
import re
import secrets
import shlex
import sys
from pathlib import Path

from pydantic import ValidationError

from code_exec.compose import check_executor, connect
from code_exec.local_executor import ensure_local_executor
from executor.config import ClientSettings, ExecutorSettings
from executor.errors import ExecutorError, validation_text
from openai_tools.config import ApiSettings

# Each command imports what only it needs (the HTTP apps, uvicorn, the JWT code) when it runs:
# `code-exec mcp` is started by MCP clients that wait about five seconds for its answer.

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("code-exec")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def parse_ttl(text: str) -> int:
    """Seconds of '90', '30m', '1h' or '2d'."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"ttl {text!r}: use seconds or 30m, 1h, 2d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _executor(args: argparse.Namespace) -> int:
    from code_exec.serving import serve
    from executor.server.app import create_app

    overrides: dict[str, object] = {"dev_mode": True} if args.dev else {}
    settings = ExecutorSettings(**overrides)  # type: ignore[arg-type]
    host, port = args.host or settings.host, args.port or settings.port
    try:
        check_executor(ClientSettings(), settings)
        app = create_app(settings, idle_exit_s=args.idle_exit)
    except RuntimeError as exc:
        print(f"code-exec: {exc}", file=sys.stderr)
        return 2
    if args.dev and not os.environ.get("CODE_EXEC_INTERNAL_TOKEN"):
        print(
            "code-exec: dev mode, generated internal token (send it as Internal-Auth-Token):\n"
            f"  {settings.require_token()}",
            file=sys.stderr,
        )
    where = args.unix_socket or f"http://{host}:{port}"
    print(f"code-exec: executor on {where}", file=sys.stderr)
    serve(app, host, port, args.log_level, settings.header_timeout_s, args.unix_socket)
    return 0


def _failure(exc: Exception) -> int:
    reason = validation_text(exc.errors()) if isinstance(exc, ValidationError) else str(exc)
    print(f"code-exec: {reason}", file=sys.stderr)
    return 2


def _api_settings(dev: bool) -> ApiSettings:
    overrides: dict[str, object] = {"dev_mode": True} if dev else {}
    return ApiSettings(**overrides)  # type: ignore[arg-type]


def _api(args: argparse.Namespace, *, dev: bool) -> int:
    from code_exec.serving import serve
    from openai_tools.app import create_api_app
    from openai_tools.auth import issue_token

    try:
        settings = _api_settings(dev)
        check_executor(settings, ExecutorSettings())
        app = create_api_app(settings, lambda: connect(settings))
    except (RuntimeError, ValidationError) as exc:
        return _failure(exc)
    host, port = args.host or settings.api_host, args.port or settings.api_port
    where = ", ".join(settings.executor_urls) or settings.executor_url or "in this process"
    print(
        f"code-exec: API on http://{host}:{port} (docs /docs, MCP /mcp), executor {where}",
        file=sys.stderr,
    )
    if dev:
        token = issue_token(settings, "dev", 12 * 3600)
        kept = settings.dev_secret_file
        print(
            "code-exec: dev token for user 'dev', valid 12 h:\n"
            f"  export TOKEN={token}\n"
            f'  curl -s http://{host}:{port}/v1/code_interpreter/run -H "Authorization: Bearer '
            '$TOKEN" -H "Content-Type: application/json" -d \'{"code": "print(1 + 1)"}\'',
            file=sys.stderr,
        )
        if kept is not None:
            print(
                f"code-exec: dev tokens are signed with the secret kept in {kept}: they outlive "
                "restarts (delete it and restart to revoke them all); `code-exec token create "
                "--dev --user NAME` mints more",
                file=sys.stderr,
            )
    serve(app, host, port, args.log_level, settings.header_timeout_s)
    return 0


def _token(args: argparse.Namespace) -> int:
    from openai_tools.auth import issue_token

    try:
        settings = _api_settings(args.dev)
        token = issue_token(settings, args.user, args.ttl)
    except (RuntimeError, ValidationError, ExecutorError) as exc:
        return _failure(exc)
    if settings.dev_secret_file is not None:
        print(
            f"code-exec: dev token, signed with the secret in {settings.dev_secret_file}: a dev "
            "server (`code-exec serve`, `code-exec api --dev`) with this CODE_EXEC_STATE_DIR "
            "accepts it",
            file=sys.stderr,
        )
    print(token)
    return 0


def _mcp(args: argparse.Namespace) -> int:
    import anyio

    from mcp_server.stdio import serve_stdio

    overrides = {"executor_url": args.executor_url} if args.executor_url else {}
    try:
        settings = ClientSettings(**overrides)
        executor_settings = ExecutorSettings()
        check_executor(settings, executor_settings)
        local = None
        if not settings.remote and not args.in_process:
            # Sessions outlive this process: clients start one `code-exec mcp` per call.
            idle = max(executor_settings.session_idle_ttl_s, 60.0) + 60.0
            # Reached (started when none runs) in the background: `initialize` is answered now.
            local = functools.partial(ensure_local_executor, executor_settings, idle)
        anyio.run(
            serve_stdio,
            connect(settings, executor_settings, local=local),
            args.user,
            args.resource_links,
        )
    except RuntimeError as exc:
        print(f"code-exec: {exc}", file=sys.stderr)
        return 2
    return 0


def _setup(args: argparse.Namespace) -> int:
    """Build what the local backend needs and say what the machine lacks."""
    from executor.backends.local.runtime import (
        build_runtime,
        missing_system_packages,
        runtime_ready,
    )

    configured = ExecutorSettings().runtime_dir
    runtime = Path(args.runtime_dir) if args.runtime_dir else configured
    missing = missing_system_packages()
    if runtime_ready(runtime) and not args.force:
        print(f"code-exec: the sandbox runtime is ready at {runtime}", file=sys.stderr)
    else:
        print(f"code-exec: building the sandbox runtime at {runtime} ...", file=sys.stderr)
        try:
            build_runtime(runtime)
        except RuntimeError as exc:
            return _failure(exc)
        print(f"code-exec: built the sandbox runtime at {runtime}", file=sys.stderr)
    if missing:
        print(
            "code-exec: this machine lacks what the sandboxes need; Debian/Ubuntu:\n"
            f"  sudo apt-get install {' '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    if runtime != configured:
        print(f"code-exec: run with CODE_EXEC_RUNTIME_DIR={runtime}", file=sys.stderr)
    print("code-exec: ready: `code-exec mcp` (stdio) or `code-exec serve`", file=sys.stderr)
    return 0


def _key(args: argparse.Namespace) -> int:
    from openai_tools.auth import MAX_SUBJECT_CHARS, hash_api_key

    user: str = args.user
    if not user or len(user) > MAX_SUBJECT_CHARS or any(c in user for c in ",: \t\n\r"):
        print(
            f"code-exec: user {user[:80]!r}: a user name for a key is 1 to {MAX_SUBJECT_CHARS} "
            "characters without spaces, ',' or ':'",
            file=sys.stderr,
        )
        return 2
    key = f"ce_{secrets.token_urlsafe(32)}"
    digest = hash_api_key(key)
    named = os.environ.get("CODE_EXEC_API_KEYS_FILE")
    keys_file = shlex.quote(named) if named else '"$CODE_EXEC_API_KEYS_FILE"'
    print(f"API key for {user} (give it to them; it is not stored):\n  {key}")
    print(
        "To accept it, add its line to the keys file (a running server reads the file again "
        f"when it changes, no restart):\n  echo {shlex.quote(f'{user} {digest}')} >> {keys_file}"
    )
    print(
        "or add it to CODE_EXEC_API_KEYS (comma-separated; read at start, so restart the "
        f"server):\n  {user}:{digest}"
    )
    return 0


def _seccomp_profile() -> int:
    from executor.backends.local.policy import EXECUTOR_SYSCALLS, SYSCALLS
    from executor.backends.local.seccomp import container_profile, render_profile

    sys.stdout.write(render_profile(container_profile(SYSCALLS, EXECUTOR_SYSCALLS)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="code-exec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # Before the command or after it: `code-exec --log-level warning mcp` or `code-exec mcp
    # --log-level warning` (client configs are written both ways).
    log_level = argparse.ArgumentParser(add_help=False)
    log_level.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        type=str.lower,
        choices=["debug", "info", "warning", "error", "critical"],
    )
    parser.add_argument("--log-level", default="info", type=str.lower)
    commands = parser.add_subparsers(dest="command", required=True)
    both = [log_level]
    serve = commands.add_parser(
        "serve",
        parents=both,
        help="everything on this machine: API with an embedded executor, dev token",
    )
    api = commands.add_parser("api", parents=both, help="the API service (default :8000)")
    executor = commands.add_parser(
        "executor", parents=both, help="the executor's internal API (:8001)"
    )
    for sub in (serve, api, executor):
        sub.add_argument("--host", default=None)
        sub.add_argument("--port", type=int, default=None)
    executor.add_argument("--dev", action="store_true", help="generate an internal token")
    executor.add_argument("--unix-socket", default=None, help="listen on this Unix socket")
    executor.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        help="exit after this many seconds with no session and no request",
    )
    api.add_argument(
        "--dev",
        action="store_true",
        help="sign tokens with a dev secret kept in the state dir (made once), print a token",
    )
    mcp = commands.add_parser(
        "mcp", parents=both, help="the MCP server over stdio (Claude Desktop, ...)"
    )
    mcp.add_argument("--executor-url", default=None, help="a remote executor (else in process)")
    mcp.add_argument("--user", default="local", help="who owns the sessions (default local)")
    mcp.add_argument(
        "--no-resource-links",
        dest="resource_links",
        action="store_false",
        help="name output files in the text only, without resource_link blocks (for clients "
        "that hand them to a model provider as URLs, such as langchain-mcp-adapters)",
    )
    mcp.add_argument(
        "--in-process",
        action="store_true",
        help="run the executor inside this process (its sessions end with it) instead of the "
        "shared local executor",
    )
    setup = commands.add_parser(
        "setup",
        parents=both,
        help="build the sandbox runtime (after pip/pipx/uv install) and check the machine",
    )
    setup.add_argument(
        "--runtime-dir",
        default=None,
        help="where to build it (default: CODE_EXEC_RUNTIME_DIR, else <prefix>/share/code-exec/"
        "runtime)",
    )
    setup.add_argument("--force", action="store_true", help="build it again even if ready")
    commands.add_parser(
        "seccomp-profile",
        parents=both,
        help="print the seccomp profile for the executor's container (Docker, Podman, "
        "Kubernetes Localhost): the sandboxes' policy less what the executor itself calls",
    )
    token = commands.add_parser("token", help="bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create",
        parents=both,
        help="mint a token (with CODE_EXEC_JWT_SECRET, or --dev)",
    )
    create.add_argument("--user", required=True)
    create.add_argument(
        "--dev",
        action="store_true",
        help="sign with the dev secret a dev server (serve, api --dev) keeps in the same "
        "CODE_EXEC_STATE_DIR, when CODE_EXEC_JWT_SECRET is not set",
    )
    create.add_argument("--ttl", type=parse_ttl, default=3600, help="e.g. 1h, 30m, 2d")
    key = commands.add_parser("key", help="API keys")
    key_commands = key.add_subparsers(dest="key_command", required=True)
    key_create = key_commands.add_parser(
        "create", parents=both, help="a new API key and its config line"
    )
    key_create.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    # Logs go to stderr: over stdio, stdout is the MCP protocol's.
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    match args.command:
        case "executor":
            return _executor(args)
        case "api":
            return _api(args, dev=args.dev)
        case "serve":
            return _api(args, dev=True)
        case "token":
            return _token(args)
        case "mcp":
            return _mcp(args)
        case "setup":
            return _setup(args)
        case "seccomp-profile":
            return _seccomp_profile()
        case _:
            return _key(args)


if __name__ == "__main__":
    sys.exit(main())
