"""Counting what a computation costs: operations dispatched, FLOPs, largest tensor, bytes saved for backward,
memory peaks."""

from __future__ import annotations

import ctypes
import functools
import resource
import sys
import time
from collections import Counter
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any operator produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def operator_costs(fn: Callable[[], object]) -> tuple[int, int]:
    """(FLOPs, bytes of the largest tensor produced) of running ``fn()``.

    Run it on ``meta`` tensors to count without computing or allocating: the
    counts are then those of the CUDA code path.
    """
    flops, largest = FlopCounterMode(display=False), _LargestOutput()
    with flops, largest:
        fn()
    return flops.get_total_flops(), largest.largest


def is_view(op) -> bool:
    """Whether the ATen operator ``op`` only re-describes its input's memory (no kernel runs).

    The rule: its schema returns an alias of an input without writing to it
    (``OpOverload.is_view``), or it is ``_unsafe_view`` (a view whose schema does
    not say so). In one mpno training step these are ``view``, ``_unsafe_view``,
    ``reshape`` where it is a view, ``permute``, ``transpose``, ``t``, ``slice``,
    ``select``, ``narrow``, ``expand``, ``unsqueeze``, ``squeeze``, ``as_strided``,
    ``alias``, ``detach``, ``split``, ``split_with_sizes``, ``unbind``,
    ``view_as_real``, ``view_as_complex``, ``real``, ``imag`` and ``_conj``.
    """
    return op.is_view or op.overloadpacket is torch.ops.aten._unsafe_view


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched while it is active: ``kernels`` (a Counter by operator name) and,
    apart, the view-like ones (:func:`is_view`) in ``views``.

    Operations are counted where Python dispatch sees them: what an operator
    calls inside its own kernel (a copy a library makes internally) is not seen.
    On ``meta`` tensors nothing is computed, so a step of any size is counted in
    milliseconds; mpno's code follows its CUDA branches there (:mod:`mpno.ops.devices`).
    """

    def __init__(self):
        super().__init__()
        self.kernels: Counter = Counter()
        self.views: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        (self.views if is_view(func) else self.kernels)[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Kernels counted (views excluded)."""
        return sum(self.kernels.values())


def step_op_counts(model: torch.nn.Module, x, y, loss_fn: Callable) -> OpCounter:
    """The operations of one forward pass, ``loss_fn(model(x), y)`` and backward, after one uncounted step
    (which builds the cached tables and plans a first step needs)."""
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    with OpCounter() as counter:
        loss_fn(model(x), y).backward()
    return counter


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while running ``fn()``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # no such symbol (macOS, musl); no process handle (Windows)
        return None


def release_freed_memory() -> bool:
    """Hand the memory that the C allocator keeps from freed tensors back to the system (glibc's ``malloc_trim``).

    Tensors of ever-different sizes (the batches of clouds that differ in size, their neighbourhoods)
    leave freed pieces that glibc keeps and cannot reuse well: without this, a process's resident
    memory grows epoch after epoch although no tensor outlives its step. False where the C library
    has no ``malloc_trim`` (macOS, Windows, musl).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def peak_rss_bytes() -> int:
    """This process's peak resident memory since start or the last :func:`reset_peak_rss`."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_memory(device: torch.device) -> dict:
    """``{"peak_memory_bytes", "memory_kind"}``: CUDA's peak allocated on a GPU, the process's peak RSS elsewhere."""
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "memory_kind": "CUDA peak allocated"}
    return {"peak_memory_bytes": peak_rss_bytes(), "memory_kind": "process peak RSS"}


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux; the peak elsewhere)."""
    rss = _status_kib("VmRSS")
    return rss * 1024 if rss is not None else peak_rss_bytes()


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak CUDA memory allocated while running ``fn()`` (the allocator's peak, reset first)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def timings(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None) -> list[float]:
    """Wall time of each of ``repeats`` runs of ``fn()``, after ``warmup`` runs (synchronising CUDA)."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (synchronising CUDA)."""
    return sorted(timings(fn, repeats, warmup, device))[repeats // 2]
