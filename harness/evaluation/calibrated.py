"""A model's probabilities as deployed: its temperature applied, and optionally test-time flips (numpy).

`combine` turns logits into the probabilities `harness.predict` prints and
`harness.evaluate` scores: ``softmax(logits / T)`` with the temperature the model carries
(`harness.core.temperature`), and with ``tta="flip"`` the mean of that and the same for
the horizontally mirrored image. `score` adds what evaluation reports about both: the ECE
and NLL before and after the temperature, and the top-1 and balanced accuracy without and
with the flips (the gain). `refuse_flips` stops flips for a model trained on data where a
mirror may change the class (the run trained without flips: digits, letters, arrows).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np
import numpy.typing as npt

from harness.core.errors import DataError
from harness.core.temperature import Temperature, nll
from harness.evaluation.metrics import calibration, compute_metrics, softmax

__all__ = ["TTA_KINDS", "Scored", "Tta", "combine", "refuse_flips", "score"]

Tta = Literal["none", "flip"]
TTA_KINDS: tuple[Tta, ...] = ("none", "flip")
Floats = npt.NDArray[np.float64]


def refuse_flips(flips_change_class: bool | None, where: str) -> None:
    """A `DataError` naming `where` when the model's run says a mirror may change the class."""
    if flips_change_class:
        raise DataError(
            f"{where}: --tta flip refused: the model was trained without flips ([augment].hflip = 0), "
            "the mark of data where a mirrored image may be another class (digits, letters, arrows); "
            "flips are for models trained with [augment].hflip > 0"
        )


def combine(
    logits: npt.ArrayLike, flipped: npt.ArrayLike | None = None, temperature: Temperature | None = None
) -> Floats:
    """``softmax(logits / T)``, averaged with the mirrored images' when `flipped` is given."""
    scale = 1.0 if temperature is None else temperature.value
    probabilities = softmax(np.asarray(logits, dtype=np.float64) / scale)
    if flipped is not None:
        probabilities = (probabilities + softmax(np.asarray(flipped, dtype=np.float64) / scale)) / 2
    return probabilities


@attrs.frozen(kw_only=True)
class Scored:
    """The probabilities an evaluation scores, the uncalibrated ones beside them, and the figures."""

    probabilities: Floats
    uncalibrated: Floats | None
    """With T = 1 (and the same flips), when the model carries a temperature."""
    figures: dict[str, Any]
    """``calibration`` and ``tta`` for ``metrics.json``."""


def score(
    logits: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    temperature: Temperature | None,
    flipped: npt.ArrayLike | None = None,
    bins: int = 15,
) -> Scored:
    """The probabilities as deployed, and the calibration and flip figures of `targets` (see the module)."""
    true = np.asarray(targets, dtype=np.int64)
    probabilities = combine(logits, flipped, temperature)
    uncalibrated = combine(logits, flipped) if temperature is not None else None
    before = probabilities if uncalibrated is None else uncalibrated
    figures: dict[str, Any] = {
        "calibration": {
            "temperature": None if temperature is None else temperature.to_json(),
            "ece_before": calibration(before, true, bins).ece,
            "ece_after": calibration(probabilities, true, bins).ece,
            "nll_before": nll(np.log(np.clip(before, 1e-300, None)), true),
            "nll_after": nll(np.log(np.clip(probabilities, 1e-300, None)), true),
        },
        "tta": None,
    }
    if flipped is not None:
        plain = compute_metrics(combine(logits, None, temperature), true, bins=bins)
        both = compute_metrics(probabilities, true, bins=bins)
        figures["tta"] = {
            "kind": "flip",
            "top1_without": plain.top1,
            "top1_with": both.top1,
            "gain_points": 100 * (both.top1 - plain.top1),
            "balanced_accuracy_without": plain.balanced_accuracy,
            "balanced_accuracy_with": both.balanced_accuracy,
        }
    return Scored(probabilities=probabilities, uncalibrated=uncalibrated, figures=figures)
