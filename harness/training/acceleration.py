"""What a run asks of its device: precision, memory format and compilation, resolved once.

`resolve_acceleration` turns the ``"auto"`` settings into the choice for this machine:

- ``[trainer].precision = "auto"``: ``"bf16-mixed"`` on a GPU that supports bfloat16
  (Ampere and later), ``"16-mixed"`` on an older GPU, ``"32-true"`` on the CPU (and MPS);
- ``[model].channels_last = "auto"``: on for a convolutional net on a GPU, where cuDNN's
  NHWC kernels are the fast ones (on the CPU, off);
- ``[model].compile``: `torch.compile` of the network's forward for the training and
  validation steps; the network itself, its parameters and its `state_dict` keys stay
  as they are, so the EMA, checkpoints, resume and the ONNX export see the plain module.

The run prints the choice at its start and records it in ``summary.json`` (``acceleration``).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.core.errors import SettingsError
from harness.core.summary import Acceleration
from harness.settings import ModelSettings, TrainerSettings

__all__ = [
    "Acceleration",
    "check_decode",
    "is_convolutional",
    "resolve_acceleration",
    "resolve_precision",
    "uses_gpu",
]


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning will train on a CUDA GPU for `accelerator` on this machine."""
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def check_decode(decode: str, accelerator: str) -> None:
    """Refuse ``[data].decode = "gpu"`` for a run that will not train on a CUDA device."""
    if decode == "gpu" and not (uses_gpu(accelerator) and torch.cuda.is_available()):
        raise SettingsError(
            f'[data].decode = "gpu" needs a CUDA device; [trainer].accelerator = {accelerator!r} '
            'trains without one here (set decode = "cpu")'
        )


def resolve_precision(requested: str, *, gpu: bool, bf16: bool) -> str:
    """Lightning's precision for `requested`; ``"auto"`` depends on the device (module docstring)."""
    if requested != "auto":
        return requested
    if not gpu:
        return "32-true"
    return "bf16-mixed" if bf16 else "16-mixed"


def is_convolutional(network: nn.Module) -> bool:
    """More than one 2-d convolution: a transformer's patch embedding alone does not count."""
    return sum(isinstance(module, nn.Conv2d) for module in network.modules()) > 1


def resolve_acceleration(
    trainer: TrainerSettings,
    model: ModelSettings,
    network: nn.Module,
    *,
    gpu: bool | None = None,
    bf16: bool | None = None,
) -> Acceleration:
    """The `Acceleration` of a run; `gpu` and `bf16` default to what this machine has."""
    on_gpu = uses_gpu(trainer.accelerator) if gpu is None else gpu
    if bf16 is None:
        bf16 = on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    channels_last = (
        on_gpu and is_convolutional(network) if model.channels_last == "auto" else bool(model.channels_last)
    )
    return Acceleration(
        device="cuda" if on_gpu else "cpu" if trainer.accelerator in ("auto", "cpu") else trainer.accelerator,
        precision=resolve_precision(trainer.precision, gpu=on_gpu, bf16=bf16),
        channels_last=channels_last,
        compile=model.compile,
    )
