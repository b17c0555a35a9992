"""Reports the model at the start of a fit; consumes FitStart, publishes nothing.

On rank zero it prints a table and writes ``run_dir/model_info/model_info.json``:
the architecture (the training module's ``arch``, else the network's class name), the
parameters (total, trainable), the size of parameters and buffers, the input shape
(batch 1 at ``context.preprocessing.image_size``), and the compute of one forward pass
both as FLOPs (torch's `FlopCounterMode`: 2 per multiply-add) and as MACs (FLOPs / 2,
the unit of torchvision's published "GFLOPS"). The network is ``context.model.net``
when the training module has one, else ``context.model``. A model whose forward pass
cannot be counted is reported without FLOPs, with the reason.
"""

from __future__ import annotations

from typing import Any

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import FitStart
from harness.core.options import option
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.io.artifacts import write_json
from harness.io.tables import Table, write_table
from subscribers._flops import model_stats
from subscribers._tables import print_table, print_warnings

__all__ = ["SPEC", "ModelInfo", "ModelInfoSettings"]


@attrs.frozen(kw_only=True)
class ModelInfoSettings(SubscriberSettings):
    """Parameters, size and FLOPs of the model, at fit start."""

    on_error: OnError = on_error_option("isolate")

    count_flops: bool = option(True, "count FLOPs with `torch.utils.flop_counter`")


class ModelInfo:
    """Architecture, parameters, size and compute of the model, once per fit."""

    def __init__(self, context: RunContext, settings: ModelInfoSettings | None = None) -> None:
        self.context = context
        self.settings = settings or ModelInfoSettings()

    def connect(self, bus: Bus) -> None:
        bus.subscribe(FitStart, self.on_fit_start, rank_zero_only=True)

    def on_fit_start(self, event: FitStart) -> None:
        context = self.context
        stats = model_stats(
            context.require_model(), context.preprocessing.image_size, flops=self.settings.count_flops
        )
        folder = context.layout.folder(SPEC.name)
        path = write_json(folder / "model_info.json", stats)
        context.record_artifact("model_info", path)
        write_table(context.layout, SPEC.name, Table(title="Model", facts=_rows(stats)))
        if context.verbosity != "quiet":
            print_table(
                f"Model: {stats['arch']}",
                ["property", "value"],
                _rows(stats),
                caption=stats["flops_convention"],
            )
        if stats["flops"] is None and self.settings.count_flops:
            print_warnings("model_info", [f"FLOPs not counted: {stats['flops_error']}"])


SPEC = SubscriberSpec(name="model_info", build=ModelInfo, settings=ModelInfoSettings)


def _rows(stats: dict[str, Any]) -> list[list[str]]:
    parameters, size = stats["parameters"], stats["size"]
    flops, macs = stats["flops"], stats["macs"]
    return [
        ["architecture", stats["arch"]],
        ["network", f"{stats['network']} (in {stats['module']})"],
        ["input shape", " x ".join(str(n) for n in stats["input_shape"])],
        ["parameters", f"{parameters['total']:,}"],
        ["trainable", f"{parameters['trainable']:,}"],
        ["size (parameters + buffers)", f"{size['mb']:.2f} MB ({size['mib']:.2f} MiB)"],
        ["FLOPs (2 per multiply-add)", "n/a" if flops is None else f"{flops / 1e9:.3f} GFLOPs"],
        ["MACs (multiply-adds)", "n/a" if macs is None else f"{macs / 1e9:.3f} GMACs"],
    ]
