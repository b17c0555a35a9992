"""Temperature scaling: the fit finds the NLL's minimum and never makes it worse than T = 1."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.temperature import Temperature, fit_temperature, nll


def sampled(
    true_temperature: float, seed: int, n: int = 2000, classes: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / true_temperature): the best T is about that."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    scaled = logits / true_temperature
    p = np.exp(scaled - scaled.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    targets = np.array([rng.choice(classes, p=row) for row in p])
    return logits, targets


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature: float) -> None:
    logits, targets = sampled(true_temperature, seed=0)
    fit = fit_temperature(logits, targets)
    assert fit.value == pytest.approx(true_temperature, rel=0.15)
    grid = np.linspace(0.2, 5, 400)
    assert fit.nll_after <= min(nll(logits, targets, t) for t in grid) + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_the_fitted_temperature_never_makes_the_nll_worse(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    logits = rng.normal(0, float(rng.uniform(0.01, 30)), (n, 4))
    targets = rng.integers(0, 4, n)
    fit = fit_temperature(logits, targets)
    assert fit.nll_before == pytest.approx(nll(logits, targets))
    assert fit.nll_after == pytest.approx(nll(logits, targets, fit.value))
    assert fit.nll_after <= fit.nll_before
    assert np.isfinite(fit.value) and fit.value > 0


def test_an_over_confident_model_is_softened_and_predictions_stay() -> None:
    logits, targets = sampled(3.0, seed=1)
    over_confident = logits * 4  # as if trained until its logits grew
    fit = fit_temperature(over_confident, targets)
    assert fit.value > 4
    assert fit.nll_after < fit.nll_before
    assert (fit.apply(over_confident).argmax(1) == over_confident.argmax(1)).all()


def test_nothing_to_fit_keeps_t_1() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)).value == 1.0
    assert fit_temperature(np.array([[np.nan, 0.0]]), np.array([0])).value == 1.0


def test_the_record_round_trips_and_refuses_a_bad_value() -> None:
    fit = Temperature(value=1.7, nll_before=0.9, nll_after=0.7, images=10, epoch=3)
    assert Temperature.from_json(fit.to_json()) == fit
    with pytest.raises(ValueError, match="finite and positive"):
        Temperature.from_json({**fit.to_json(), "value": -1.0})
    with pytest.raises(ValueError, match="not a temperature record"):
        Temperature.from_json({"value": 1.0})


def test_the_nll_is_the_mean_cross_entropy() -> None:
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    small = np.log1p(np.exp(-4.0))
    assert nll(logits, np.array([0, 1, 1])) == pytest.approx((small + small + 4 + small) / 3)
    assert nll(logits, np.array([0, 1, 1]), 2.0) == pytest.approx(nll(logits / 2, np.array([0, 1, 1])))
