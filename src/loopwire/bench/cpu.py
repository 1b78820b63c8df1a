"""CPU time a process has used, all threads, from Linux's scheduler statistics.

Owns reading /proc; must not decide when to read it. Elsewhere it reports None rather than guess.
"""

from __future__ import annotations

import os


def process_cpu_ns(pid: int) -> int | None:
    """Nanoseconds on CPU of every thread of `pid` (user, system and the kernel's work on its behalf),
    or None where /proc/PID/task/*/schedstat is not available."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total
