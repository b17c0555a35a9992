"""`PairCounts`: a confusion matrix kept as (true, predicted) pairs, whatever the class count.

torchmetrics' `MulticlassConfusionMatrix` keeps C x C counts and updates them with a
``bincount`` of that length on every batch: at 10,000 classes, 10^8 int64 (800 MB) of
state and a like-sized all-reduce an epoch. Here each validated image adds one int64 code
(``true * C + predicted``), so the state grows with the images, never with C squared;
under DDP torchmetrics gathers the codes of every rank (uneven shards included) when
`compute` runs, on every rank.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["PairCounts"]


class PairCounts(Metric):
    """Counts of (true, predicted) class pairs; `compute` gives rows ``(true, predicted, count)``."""

    full_state_update = False
    codes: list[torch.Tensor]

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("codes", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        predicted = logits.argmax(dim=1)
        self.codes.append(targets.to(torch.int64) * self.num_classes + predicted.to(torch.int64))

    def compute(self) -> torch.Tensor:
        """The non-zero cells, one row each: true class, predicted class, count (int64, K x 3)."""
        # After a DDP sync torchmetrics holds the gathered codes as one tensor, not a list.
        codes: list[torch.Tensor] | torch.Tensor = self.codes
        if isinstance(codes, list):
            codes = dim_zero_cat(codes) if codes else torch.zeros(0, dtype=torch.int64, device=self.device)
        cells, counts = torch.unique(codes, return_counts=True)
        return torch.stack([cells // self.num_classes, cells % self.num_classes, counts], dim=1)
