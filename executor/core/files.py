"""Files a run makes: what it wrote under /home/user/outputs/, collected after the run and
kept for its owner with the run's output (issue 17's first step).

Regular files only (the workspace opens each with O_NOFOLLOW and checks it is one), at most
MAX_FILES of them and MAX_BYTES in all, each within the executor's file limit; in a session,
only those changed by this run. What does not fit is left in the sandbox and logged.
"""

import logging
from datetime import datetime

from executor.backends.base import Sandbox
from executor.errors import ExecutorError
from schemas.execution import OUTPUTS_DIR, OutputFile
from schemas.files import mime_type

log = logging.getLogger(__name__)

MAX_FILES = 20
MAX_BYTES = 64 * 1024 * 1024


# What a session's outputs/ held after its last run: path -> (modified time, size).
Seen = dict[str, tuple[datetime, int]]


async def collect_outputs(
    sandbox: Sandbox, seen: Seen | None, max_file_bytes: int
) -> list[tuple[OutputFile, bytes]]:
    """The files under outputs/ with their bytes: all of them, or (given what a session's
    earlier runs left, `seen`, which is brought up to date) those this run made or changed."""
    try:
        listed = await sandbox.list_files(OUTPUTS_DIR)
    except (ExecutorError, OSError):
        return []  # no outputs/ directory: nothing to collect
    prefix = f"{OUTPUTS_DIR}/"
    collected: list[tuple[OutputFile, bytes]] = []
    total = 0
    before = dict(seen) if seen is not None else {}
    if seen is not None:
        seen.clear()
        seen.update({info.path: (info.modified_at, info.size) for info in listed})
    for info in listed:
        if info.is_dir or not info.path.startswith(prefix):
            continue
        if before.get(info.path) == (info.modified_at, info.size):
            continue
        if len(collected) >= MAX_FILES or total + info.size > MAX_BYTES:
            log.info(
                "outputs: %s left in the sandbox (over %d files or %d bytes)",
                info.path,
                MAX_FILES,
                MAX_BYTES,
            )
            continue
        try:
            data = await sandbox.read_file(info.path, min(max_file_bytes, MAX_BYTES - total))
        except (ExecutorError, OSError) as exc:  # a link, a file over the limit, gone meanwhile
            log.info("outputs: %s not kept: %s", info.path, exc)
            continue
        name = info.path.removeprefix(prefix)
        collected.append((OutputFile(name=name, size=len(data), mime_type=mime_type(name)), data))
        total += len(data)
    return collected
