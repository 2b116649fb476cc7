"""What /proc says of host processes: children, resident memory, process trees.

Each read is a snapshot of processes that may exit at any moment: a process that is gone reads as
having no children and no memory, never as an error.
"""

import contextlib
import os


def children(pid: int) -> list[int]:
    """The direct children of a process (of all its threads)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def rss_bytes(pid: int) -> int:
    """A process's resident memory (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree(pid: int) -> list[int]:
    """A process and all its descendants, depth first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += children(current)
    return found
