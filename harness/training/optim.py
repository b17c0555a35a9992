"""The learning-rate schedule: linear warm-up, then cosine or step decay, per optimizer step.

`Schedule.factor(step)` is the multiplier of the peak rate (``[model].lr``) for the
optimizer step that follows `step` earlier ones. Its length is the run's: ``max_epochs``
times the optimizer steps per epoch, as the Trainer estimates them. The factor is computed
from the step count alone, and the count is what a checkpoint keeps, so a run resumed with
a larger ``max_epochs`` continues on a schedule stretched to end at its new last epoch
(the rate jumps back up from where the shorter schedule had taken it, instead of staying
at the old schedule's zero for every extra epoch).
"""

from __future__ import annotations

import math
from typing import Literal

import attrs

__all__ = ["Schedule"]


@attrs.frozen(kw_only=True)
class Schedule:
    """Warm-up over `warmup_steps`, then `kind` decay over the rest of `total_steps`.

    Warm-up rises linearly to 1 at the last warm-up step: ``(step + 1) / warmup_steps``.
    After it, with ``progress = (step - warmup_steps) / (total_steps - warmup_steps)``:
    ``"cosine"`` is ``(1 + cos(pi * progress)) / 2`` (1 down to nearly 0 at the last step),
    ``"step"`` is ``gamma ** (milestones passed)``, ``"none"`` is 1.
    """

    total_steps: int
    warmup_steps: int = 0
    kind: Literal["cosine", "step", "none"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    @classmethod
    def for_run(
        cls,
        *,
        total_steps: int,
        max_epochs: int,
        warmup: float,
        warmup_unit: Literal["epochs", "steps"],
        kind: Literal["cosine", "step", "none"],
        milestones: tuple[float, ...] = (0.5, 0.75),
        gamma: float = 0.1,
    ) -> Schedule:
        """A schedule of `total_steps` whose warm-up is `warmup` epochs or steps (at most the run)."""
        total = max(1, total_steps)
        per_epoch = total / max(1, max_epochs)
        steps = warmup * per_epoch if warmup_unit == "epochs" else warmup
        return cls(
            total_steps=total,
            warmup_steps=min(total, round(steps)),
            kind=kind,
            milestones=milestones,
            gamma=gamma,
        )

    def factor(self, step: int) -> float:
        """The multiplier of the peak rate for the step after `step` earlier ones."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "none":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "step":
            return float(self.gamma ** sum(1 for m in self.milestones if progress >= m))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
