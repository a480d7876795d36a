"""Data-parallel training across processes (``torchrun``), and the single-process case.

Every helper works unchanged with one process (no process group): then it is the
identity. See ``docs/distributed.md``.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = Context()


def setup(backend: str = "auto", device_type: str = "cpu") -> Context:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    ``backend``: ``"auto"`` (NCCL on CUDA, gloo on the CPU), ``"nccl"`` or ``"gloo"``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE_PROCESS
    if backend not in ("auto", "nccl", "gloo"):
        raise ValueError(f"dist_backend={backend!r} is not supported; allowed: 'auto', 'nccl', 'gloo'")
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return current()


def current() -> Context:
    """The context of an initialised process group, or the single-process one."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown() -> None:
    """Leave the process group, after everything holding it (DDP's reducer) is gone.

    Objects that keep the group alive past this point would destroy it at
    interpreter exit, where its worker threads abort the process.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def everywhere_true(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on every process (one all-reduce)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor(1.0 if flag else 0.0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() == 1.0)


def sum_everywhere(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over processes (float64)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value):
    """Process 0's ``value``, on every process."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sum_gradients(state, bucket):
    """DDP communication hook: all-reduce gradients by summing (DDP's default averages).

    Each process weights its loss by its share of the global batch, so the sum is
    the gradient of the global batch's mean loss, and every sample's gradient has
    the same size as in one process (what half-precision backward passes and loss
    scaling see).
    """
    future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


def rank_batches(count: int, batch_size: int, seed: int | None, context: Context) -> list[tuple[torch.Tensor, int]]:
    """This process's share of each global batch, and the global batch's size.

    The global batch is ``batch_size × world`` consecutive samples of one
    permutation (seeded by ``seed``; ``None``: in order), split into contiguous
    shares, so ``world`` processes see exactly the batches one process would see
    with the global batch size. (``DistributedSampler`` interleaves ranks instead,
    which changes the batches with the world size.) A final global batch with
    fewer samples than processes is dropped.
    """
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)) if seed is not None \
        else torch.arange(count)
    step = batch_size * context.world
    shares = []
    for start in range(0, count, step):
        global_batch = order[start:start + step]
        if len(global_batch) < context.world:
            break
        shares.append((torch.tensor_split(global_batch, context.world)[context.rank], len(global_batch)))
    return shares
