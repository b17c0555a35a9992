"""Free what only training needs once the loop is over, before `TrainEnd` consumers run.

After the last optimizer step a run still holds the optimizer's state (AdamW: two
moments per weight), every weight's gradient and, in the allocator, the free space the
last checkpoint's serialisation left behind. What runs at `TrainEnd` (the ONNX export
above all: torch's exporter, a float32 copy of the model, an ONNX Runtime session) then
piles on top of all that. `release_training_state` drops the optimizer state and the
gradients, collects the garbage and hands free heap pages back to the system, so that
the export reuses that memory instead of adding to the peak.

The caller (`BusCallback`) frees only what a checkpoint written later would not need:
the whole ``last.ckpt`` of the final step is already on disk, or no checkpoint is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from harness.core.memory import return_free_memory

__all__ = ["Released", "release_training_state"]


class Released:
    """What `release_training_state` freed: tensors and bytes, for the log."""

    def __init__(self) -> None:
        self.tensors = 0
        self.bytes = 0

    def add(self, tensor: object) -> None:
        if isinstance(tensor, torch.Tensor):
            self.tensors += 1
            self.bytes += tensor.numel() * tensor.element_size()

    def describe(self) -> str:
        return f"{self.tensors} tensors, {self.bytes / 2**20:.1f} MiB"


def release_training_state(module: nn.Module, optimizers: Iterable[torch.optim.Optimizer]) -> Released:
    """Drop `module`'s gradients and every optimizer's per-weight state, then return free memory.

    The optimizers stay usable (their parameter groups and hyper-parameters are kept; a
    later step would start with fresh moments); the weights are untouched.
    """
    released = Released()
    for parameter in module.parameters():
        if parameter.grad is not None:
            released.add(parameter.grad)
            parameter.grad = None
    for optimizer in optimizers:
        for state in optimizer.state.values():
            for value in state.values():
                released.add(value)
        optimizer.state.clear()
    return_free_memory()
    return released
