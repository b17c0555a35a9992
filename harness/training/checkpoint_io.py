"""Checkpoint files written whole or not at all: `AtomicCheckpointIO`, used for every save.

Lightning's own `TorchCheckpointIO` stages a checkpoint in ``$TMPDIR`` and then moves it:
across file systems (the usual case on clusters) that is a copy, and a full disk leaves a
partial file under the final name. This one writes beside the target under a hidden
temporary name, fsyncs the file and its folder, and renames it over the target; a failed
write removes the temporary file, leaves every earlier checkpoint as it was, and raises
`CheckpointWriteError` naming the path and the cause. A writer killed mid-write (SIGKILL,
power loss) leaves its temporary file behind; `remove_stale_temporaries` removes those of
writers that are gone, and the next run (or resume) on the run directory calls it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from harness.core.errors import CheckpointWriteError

__all__ = ["AtomicCheckpointIO", "remove_stale_temporaries", "temporary_path"]

log = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def temporary_path(target: Path, pid: int | None = None) -> Path:
    """Where `target` is written before its rename: ``.<name>.<pid>.tmp`` beside it."""
    return target.with_name(f".{target.name}.{os.getpid() if pid is None else pid}.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a pid reused from a killed writer (containers restart at the same pids)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the checkpoint temporaries in `folder` whose writer is no longer running; return them.

    Call it holding the run directory's lock, so that no other harness process writes
    there. This process's own pid counts as gone (it is not writing yet: its pid was
    reused, as containers do); another live pid's file is kept.
    """
    removed: list[Path] = []
    try:
        candidates = sorted(folder.iterdir())
    except OSError:
        return removed
    for path in candidates:
        found = _TEMPORARY.fullmatch(path.name)
        if found is None or _alive(int(found["pid"])):
            continue
        try:
            path.unlink()
        except OSError as error:
            log.warning("could not remove %s, left by a killed checkpoint write: %s", path, error.strerror)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by killed checkpoint writes in %s", len(removed), folder)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that writes in the target's folder: temporary name, fsync, rename."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        target = Path(path)
        tmp = temporary_path(target)
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
