"""TemperatureScaling: a T per validation epoch from the logits BatchEnd carries, never worse on them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.core.bus import Bus
from harness.core.testing import make_context, scripted_run
from subscribers.temperature import TemperatureScaling


def over_confident(inputs: torch.Tensor, targets: torch.Tensor, **_where: object) -> torch.Tensor:
    """Logits that favour the true class most of the time, scaled far beyond what the accuracy earns."""
    generator = torch.Generator().manual_seed(int(targets.sum()) + len(targets))
    noise = torch.randn(len(targets), 3, generator=generator)
    return 8 * (noise + 1.5 * torch.nn.functional.one_hot(targets, 3))


def test_each_validation_epoch_gets_a_temperature_that_lowers_its_nll(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    scaling = bus.attach(TemperatureScaling(context))
    scripted_run(
        bus, context, epochs=2, val_batches=3, batch_size=8, logits=over_confident, sanity_check=True
    )

    assert [fit.epoch for fit in scaling.fits] == [0, 1]
    assert context.temperature == scaling.fits[-1]
    for fit in scaling.fits:
        assert fit.value > 1  # an over-confident model is softened
        assert fit.nll_after < fit.nll_before
        assert fit.images == 24  # three validation batches of eight; the sanity check is not counted
    written = json.loads((context.run_dir / "temperature" / "temperature.json").read_text())
    assert written["current"] == context.temperature.to_json()
    assert context.artifacts["temperature"] == "temperature/temperature.json"


def test_the_fits_survive_a_resume(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    scaling = bus.attach(TemperatureScaling(context))
    scripted_run(bus, context, epochs=1, logits=over_confident)
    fresh_context = make_context(tmp_path / "again")
    fresh = TemperatureScaling(fresh_context)
    fresh.load_state_dict(scaling.state_dict())
    assert fresh.fits == scaling.fits
    assert fresh_context.temperature == scaling.fits[-1]
