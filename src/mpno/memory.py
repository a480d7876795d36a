"""How much memory a device has, and refusing work that cannot fit before it starts.

A request far beyond the machine (``generate --resolution 100000``, a model of
200000 channels) would otherwise run for a while and then die in the allocator,
or be killed by the kernel. :func:`require` compares an estimate of what the work
needs with the device's memory (CPU: the physical memory, or the container's limit
when lower; CUDA: the GPU's memory; MPS: what Metal recommends) and refuses it with
both numbers in the message. Estimates are lower bounds, so nothing that fits is
refused.
"""

from __future__ import annotations

import os

import torch


class TooLargeError(ValueError):
    """The work asked for needs more memory (or disk) than there is."""


def size(count: float) -> str:
    """A byte count for people: ``512 MiB``, ``3.2 GiB``, ``1.3 TiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} bytes"


def _cgroup_limit() -> int | None:
    """The memory limit of this process's container (cgroup v2 or v1), if it has one."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max", or v1's "no limit" sentinel
            return int(text)
    return None


def device_memory(device: torch.device | str) -> tuple[int, str] | None:
    """``(bytes, description)`` of the memory work on ``device`` can use; ``None`` if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        return total, f"the memory of {torch.cuda.get_device_name(device)} ({device})"
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        return (recommended(), "the memory Metal allows this process") if recommended else None
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    limit = _cgroup_limit()
    if limit is not None and limit < physical:
        return limit, "this container's memory limit"
    return physical, "this machine's memory"


def require(needed: float, device: torch.device | str, what: str, fix: str) -> None:
    """``TooLargeError`` if ``what`` (e.g. ``"training this model"``), estimated to need at least ``needed``
    bytes, cannot fit in ``device``'s memory; the message gives both and ``fix``."""
    available = device_memory(device)
    if available is not None and needed > available[0]:
        raise TooLargeError(f"{what} needs at least {size(needed)} of memory, more than the {size(available[0])} "
                            f"of {available[1]}; {fix}")
