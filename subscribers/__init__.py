"""The built-in subscribers, one module each; `BUILTIN` lists their specs in attach order.

The harness finds this list through the ``harness.builtins`` entry point of its own
distribution (`harness.settings.plugins`): no module under ``harness/`` imports this
package. A new built-in is one module here and one line in `BUILTIN`.
"""

from __future__ import annotations

from harness.core.spec import AnySpec
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
    trackers,
)

__all__ = ["BUILTIN"]

BUILTIN: tuple[AnySpec, ...] = (
    dataset_stats.SPEC,
    model_info.SPEC,
    augment_preview.SPEC,
    ema.SPEC,
    sampler_tracking.SPEC,
    confusion_matrix.SPEC,
    samples.SPEC,
    plots.SPEC,
    onnx_export.SPEC,
    epoch_line.SPEC,
    # After every subscriber that draws: their jobs run first on the background writer.
    trackers.SPEC,
    report.SPEC,
)
