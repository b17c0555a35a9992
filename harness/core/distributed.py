"""Combining what each process counted, under DDP: a sum or a gather, a no-op on one process.

A subscriber runs on every process of a DDP run and sees that process's shard of the
batches. Counts it keeps (per-class hits and totals, say) are per process; to act on the
whole run's counts, combine them, on every process, before rank zero writes::

    from harness.core.distributed import all_sum

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        hits, totals = all_sum(self.hits), all_sum(self.totals)   # every rank calls it
        recall = hits / totals.clamp(min=1)

Both functions are collectives: every process must call them, in the same order, so
the handler that calls them must not be subscribed with ``rank_zero_only=True`` (do the
writing under ``if context.is_rank_zero``). Outside a distributed run (one process, the
test kit) they return their input as it is. torch.distributed only; no Lightning.
"""

from __future__ import annotations

from typing import TypeVar, cast

import torch
import torch.distributed as dist

__all__ = ["all_gather", "all_sum", "world_size"]

T = TypeVar("T")


def world_size() -> int:
    """The number of processes of the run (1 outside a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over every process; `tensor` itself on one process.

    Each process passes a tensor of the same shape and dtype; every process gets the sum,
    on the device and with the dtype of its own. Under NCCL the sum travels through this
    process's GPU.
    """
    if world_size() == 1:
        return tensor
    device = tensor.device
    if dist.get_backend() == "nccl" and device.type != "cuda":
        total = tensor.to(torch.device("cuda", torch.cuda.current_device()), copy=True)
    else:
        total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(device)


def all_gather(value: T) -> list[T]:
    """`value` of every process, in rank order (``[value]`` on one process).

    For what differs in size between processes (lists of predictions, file names): any
    picklable value. Fixed-size counts are cheaper through `all_sum`.
    """
    size = world_size()
    if size == 1:
        return [value]
    gathered: list[object] = [None] * size
    dist.all_gather_object(gathered, value)
    return cast("list[T]", gathered)
