"""Checkpoint files written whole or not at all: `AtomicCheckpointIO`, used for every save.

Lightning's own `TorchCheckpointIO` stages a checkpoint in ``$TMPDIR`` and then moves it:
across file systems (the usual case on clusters) that is a copy, and a full disk leaves a
partial file under the final name. This one writes beside the target under a hidden
temporary name, fsyncs the file and its folder, and renames it over the target; a failed
write removes the temporary file, leaves every earlier checkpoint as it was, and raises
`CheckpointWriteError` naming the path and the cause.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from harness.core.errors import CheckpointWriteError

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that writes in the target's folder: temporary name, fsync, rename."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(target)
            descriptor = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        # torch's zip writer turns a failed write into a RuntimeError whose context is the OSError.
        except (OSError, RuntimeError) as error:
            tmp.unlink(missing_ok=True)
            cause = _os_error(error)
            if cause is None:
                raise
            raise CheckpointWriteError(
                f"{target}: cannot write the checkpoint ({cause.strerror or cause}); "
                "the earlier checkpoints are untouched"
            ) from None


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind `error` (itself, its cause or its context), if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None
