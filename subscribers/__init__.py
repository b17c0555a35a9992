"""The built-in subscribers, one module each; `BUILTIN` lists their specs in attach order.

The harness finds this list through the ``harness.builtins`` entry point of its own
distribution (`harness.settings.plugins`): no module under ``harness/`` imports this
package. A new built-in is one module here and one line in `BUILTIN`.

`BUILTIN` is built on first access, not when the package is imported: the background
writer's worker process unpickles drawing jobs from ``subscribers._draw_*`` modules, and
importing every subscriber (torch, torchmetrics, Lightning) would cost it seconds.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.core.spec import AnySpec

__all__ = ["BUILTIN"]


@functools.cache
def _builtin() -> tuple[AnySpec, ...]:
    from subscribers import (
        augment_preview,
        confusion_matrix,
        dataset_stats,
        ema,
        epoch_line,
        model_info,
        onnx_export,
        plots,
        report,
        sampler_tracking,
        samples,
        temperature,
        trackers,
    )

    return (
        dataset_stats.SPEC,
        model_info.SPEC,
        augment_preview.SPEC,
        ema.SPEC,
        sampler_tracking.SPEC,
        confusion_matrix.SPEC,
        samples.SPEC,
        plots.SPEC,
        temperature.SPEC,
        onnx_export.SPEC,
        epoch_line.SPEC,
        trackers.SPEC,
        report.SPEC,
    )


def __getattr__(name: str) -> tuple[AnySpec, ...]:
    if name == "BUILTIN":
        return _builtin()
    raise AttributeError(f"module 'subscribers' has no attribute {name!r}")
