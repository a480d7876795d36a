"""CPU threads: how many torch computes with (``--threads``), and a hint when the machine is busier than that.

On a machine shared with other jobs, torch's default (one thread per core) makes
every thread wait for the others' cores: a small run can be fifty times slower than
with one thread. :func:`use_threads` sets the count and logs one line when fewer
cores are free than torch uses.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import torch


def free_cores() -> tuple[int, float] | None:
    """``(cores this process may run on, 1-minute load average)``, or ``None`` where the system has no load
    average."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows, or no load average to read
        return None
    return cores, load


def busy_hint(threads: int) -> str | None:
    """A line suggesting ``--threads`` when fewer cores are free (the cores this process may use less the load
    average, rounded) than ``threads``; ``None`` otherwise."""
    seen = free_cores()
    if seen is None:
        return None
    cores, load = seen
    free = cores - load
    suggested = max(1, math.floor(free + 0.5))  # whole free cores, rounded: a little load is no reason
    if suggested >= threads:
        return None
    return (f"torch computes with {threads} threads, but only about {max(free, 0):.1f} of this machine's {cores} "
            f"cores are free (load average {load:.1f}): --threads {suggested} may run much faster")


def use_threads(threads: int | None, log: Callable[[str], None], device_type: str = "cpu") -> int:
    """Compute with ``threads`` CPU threads (``None``: torch's default) and, on the CPU, log :func:`busy_hint`'s
    line if there is one; returns the number of threads."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"--threads {threads}: give a positive int")
        torch.set_num_threads(threads)
    count = torch.get_num_threads()
    if device_type == "cpu":
        hint = busy_hint(count)
        if hint:
            log(hint)
    return count
