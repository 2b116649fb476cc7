"""`code-exec`: start the executor, or the whole service on one machine."""

import argparse
import logging
import os
import sys

import uvicorn

from executor.app import create_app
from executor.config import ExecutorSettings


def _executor(args: argparse.Namespace, *, dev: bool) -> int:
    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if dev:
        overrides["dev_mode"] = True
    settings = ExecutorSettings(**overrides)  # type: ignore[arg-type]
    try:
        app = create_app(settings)
    except RuntimeError as exc:
        print(f"code-exec: {exc}", file=sys.stderr)
        return 2
    if settings.dev_mode and not os.environ.get("CODE_EXEC_INTERNAL_TOKEN"):
        print(
            "code-exec: dev mode, generated internal token (send it as Internal-Auth-Token):\n"
            f"  {settings.require_token()}",
            file=sys.stderr,
        )
    print(f"code-exec: executor on http://{settings.host}:{settings.port}", file=sys.stderr)
    # The standard asyncio loop, not uvloop: sandboxes' control pipes are handed to the loop as
    # file objects, which uvloop closes behind their back (seen as EBADF under load).
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=args.log_level, loop="asyncio"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="code-exec", description=__doc__)
    parser.add_argument("--log-level", default="info")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("executor", "run the executor's internal HTTP API (default 127.0.0.1:8001)"),
        ("serve", "run everything on this machine (for now: the executor, in dev mode)"),
    ):
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("--host", default=None)
        sub.add_argument("--port", type=int, default=None)
        if name == "executor":
            sub.add_argument("--dev", action="store_true", help="generate an internal token")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "executor":
        return _executor(args, dev=args.dev)
    return _executor(args, dev=True)


if __name__ == "__main__":
    sys.exit(main())
