"""Temperature scaling: one number T that turns a model's logits into calibrated probabilities.

``softmax(logits / T)`` keeps every prediction (the argmax does not move) and changes only
how sure the model says it is: T > 1 softens an over-confident model. T is fitted on the
validation logits by minimising the negative log-likelihood (Guo et al., 2017). In
``b = 1 / T`` the NLL ``mean(logsumexp(b z) - b z_y)`` is convex (its second derivative is
the variance of the logits under the softmax), so a safeguarded Newton iteration finds
the minimum; a fit that does not beat T = 1 on the data it was fitted on is replaced by
T = 1, so the fitted T never makes the validation NLL worse.

The record travels with the model: `BusCallback` writes it into every checkpoint
(`CHECKPOINT_KEY`), the ONNX card into the model's metadata; `harness.predict` and
`harness.evaluate` divide the logits by it. numpy only: prediction never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np
import numpy.typing as npt

__all__ = ["CHECKPOINT_KEY", "Temperature", "fit_temperature", "nll"]

CHECKPOINT_KEY = "harness_temperature"
"""Where a checkpoint keeps the temperature fitted on the validation logits of its weights."""

_LOW, _HIGH = 1e-3, 1e3  # the range of b = 1 / T searched


@attrs.frozen(kw_only=True)
class Temperature:
    """A fitted temperature and what it did to the NLL of the logits it was fitted on."""

    value: float
    nll_before: float
    """The NLL at T = 1."""
    nll_after: float
    images: int
    epoch: int | None = None
    """The validation epoch whose logits it was fitted on (None: fitted elsewhere)."""

    def apply(self, logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The logits divided by T, in float64."""
        scaled: npt.NDArray[np.float64] = np.asarray(logits, dtype=np.float64) / self.value
        return scaled

    def to_json(self) -> dict[str, float | int | None]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, record: Mapping[str, object]) -> Temperature:
        """Read a record written by `to_json`; `ValueError` when it is not one."""
        try:
            value = float(record["value"])  # type: ignore[arg-type]
            epoch = record.get("epoch")
            fit = cls(
                value=value,
                nll_before=float(record["nll_before"]),  # type: ignore[arg-type]
                nll_after=float(record["nll_after"]),  # type: ignore[arg-type]
                images=int(record["images"]),  # type: ignore[call-overload]
                epoch=None if epoch is None else int(epoch),  # type: ignore[call-overload]
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a temperature record ({error}): {dict(record)!r}") from None
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"a temperature must be finite and positive, got {value}")
        return fit


def nll(logits: npt.ArrayLike, targets: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `targets` under ``softmax(logits / temperature)``."""
    values = np.asarray(logits, dtype=np.float64) / temperature
    true = np.asarray(targets, dtype=np.int64)
    if not len(true):
        return 0.0
    top = values.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(values - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - values[np.arange(len(true)), true]))


def _derivatives(
    z: npt.NDArray[np.float64], picked: npt.NDArray[np.float64], b: float
) -> tuple[float, float]:
    """First and second derivative of the NLL in b = 1 / T."""
    scaled = b * z
    p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    mean = (p * z).sum(axis=1)
    variance = (p * z * z).sum(axis=1) - mean * mean
    return float(np.mean(mean - picked)), float(np.mean(variance))


def fit_temperature(
    logits: npt.ArrayLike, targets: npt.ArrayLike, *, epoch: int | None = None, steps: int = 50
) -> Temperature:
    """The T minimising the NLL of `targets` under ``softmax(logits / T)``; T = 1 when nothing beats it."""
    z = np.asarray(logits, dtype=np.float64)
    true = np.asarray(targets, dtype=np.int64)
    before = nll(z, true)
    if not len(true) or not np.isfinite(z).all():
        return Temperature(value=1.0, nll_before=before, nll_after=before, images=len(true), epoch=epoch)
    picked = z[np.arange(len(true)), true]
    b, low, high = 1.0, _LOW, _HIGH
    for _ in range(steps):
        slope, curvature = _derivatives(z, picked, b)
        # The slope is increasing in b (convexity): keep a bracket and bisect where Newton leaves it.
        if slope > 0:
            high = b
        else:
            low = b
        step = b - slope / curvature if curvature > 1e-12 else np.inf
        b_next = float(step) if low < step < high else (low * high) ** 0.5
        if abs(b_next - b) <= 1e-9 * b:
            b = b_next
            break
        b = b_next
    value = 1.0 / b
    after = nll(z, true, value)
    if not after < before:
        value, after = 1.0, before
    return Temperature(value=value, nll_before=before, nll_after=after, images=len(true), epoch=epoch)
