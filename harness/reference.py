"""The settings reference, generated from the settings tree: ``python -m harness.reference``.

The README's reference is this module's output; a test keeps the two identical, so the
documentation cannot drift from the code.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import attrs

from harness.settings import Settings, SubscriberSettings

__all__ = ["HELP", "reference_markdown"]

HELP: dict[str, str] = {
    "run.name": "run directories go under `<output_dir>/<name>/version_<n>/`",
    "run.output_dir": "where run directories are made",
    "run.seed": "seeds Python, NumPy, torch, the split and the sampler",
    "run.plugins": "extra subscribers as `package.module:Class`, built with the run context",
    "run.plugins_on_error": "failure policy of the plugins",
    "run.record_events": "write `events.jsonl` (what `harness.replay` reads)",
    "data.root": '`""` for the embedded digits set, else an ImageFolder tree (optionally `train/` + `val/`)',
    "data.image_size": "images are resized to a square of this side",
    "data.batch_size": "images per batch (per process)",
    "data.val_fraction": "stratified, seeded validation share when the tree has no `val/`",
    "data.balanced": "class-balanced sampling (weights 1 / class count)",
    "data.num_workers": "data-loader worker processes",
    "data.on_corrupt": "unreadable images: stop before training, or skip them with a count",
    "model.arch": "any torchvision classification architecture, randomly initialised",
    "model.lr": "learning rate",
    "model.weight_decay": "weight decay",
    "model.optimizer": "SGD (Nesterov momentum 0.9) or AdamW",
    "model.scheduler": "cosine annealing over `max_epochs`, or a constant rate",
    "model.label_smoothing": "cross-entropy label smoothing",
    "model.weights": "a local state-dict file to start from (never downloaded)",
    "trainer.max_epochs": "epochs to train",
    "trainer.accelerator": "Lightning's accelerator",
    "trainer.devices": "devices (processes) to use, or `auto`",
    "trainer.strategy": "Lightning's strategy; `ddp` for several devices",
    "trainer.precision": "Lightning's precision",
    "trainer.resume": '`""` fresh, `"last"` the newest run of this name, or a checkpoint path',
    "trainer.accumulate_grad_batches": "batches per optimizer step",
    "trainer.gradient_clip_val": "gradient norm clip, 0 for none",
    "trainer.limit_train_batches": "a fraction (float) or a count (integer) of training batches",
    "trainer.limit_val_batches": "a fraction (float) or a count (integer) of validation batches",
    "trainer.num_sanity_val_steps": "validation batches run before training",
    "trainer.progress_bar": "rich progress bar",
    "trainer.log_every_n_steps": "CSV logging interval in steps",
    "checkpoint.enabled": "Lightning's ModelCheckpoint",
    "checkpoint.monitor": "metric that ranks checkpoints (and early stopping)",
    "checkpoint.mode": "whether a higher or lower monitor is better",
    "checkpoint.save_top_k": "best checkpoints kept (-1 all)",
    "checkpoint.save_last": "also keep `last.ckpt` (what resume uses)",
    "early_stopping.enabled": "Lightning's EarlyStopping on the checkpoint monitor",
    "early_stopping.patience": "epochs without improvement before stopping",
    "early_stopping.min_delta": "smallest change that counts as improvement",
    "enabled": "attach this subscriber",
    "on_error": "`raise` stops the run; `isolate` reports, disconnects it and goes on",
    "subscribers.ema.decay": "EMA decay after warm-up",
    "subscribers.ema.warmup": "warm-up decay `1 - (1 + step/gamma) ** -power`, capped at `decay`",
    "subscribers.ema.warmup_gamma": "warm-up gamma",
    "subscribers.ema.warmup_power": "warm-up power",
    "subscribers.ema.update_every": "optimizer steps between EMA updates",
    "subscribers.ema.start_step": "optimizer steps before the first update",
    "subscribers.onnx_export.opset": "ONNX opset (the dynamo exporter's minimum is 18)",
    "subscribers.onnx_export.tolerance": "logit difference allowed, times max(1, largest logit magnitude)",
    "subscribers.onnx_export.parity_batch": "validation images used by the parity check",
    "subscribers.confusion_matrix.normalize": "second view: normalised by true or predicted class, or none",
    "subscribers.samples.count": "images in the grid",
    "subscribers.samples.seed": "which images are shown (the same every epoch)",
    "subscribers.sampler_tracking.max_table_rows": "classes shown in the terminal table",
    "subscribers.dataset_stats.min_images": "warn about classes with fewer images",
    "subscribers.dataset_stats.size_sample": "images per split whose size is read",
    "subscribers.dataset_stats.max_table_rows": "classes shown in the terminal table",
    "subscribers.model_info.count_flops": "count FLOPs with `torch.utils.flop_counter`",
}


def _allowed(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " / ".join(f"`{value}`" for value in typing.get_args(hint))
    if origin is tuple:
        return "list of strings"
    if origin is not None:
        return " or ".join(_allowed(arg) for arg in typing.get_args(hint))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(hint, str(hint))


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[]`" if not value else f"`{list(value)}`"
    return f"`{value}`"


def reference_markdown() -> str:
    """Every table and key of `settings.toml` with its type, default and meaning."""
    lines = ["## Settings reference", ""]
    lines.append("Every key is optional. Unknown keys are errors, with the closest valid name suggested.")

    def table(obj: Any, path: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(type(obj))
        scalars = [name for name in attrs.fields_dict(type(obj)) if not attrs.has(hints[name])]
        if scalars:
            doc = (type(obj).__doc__ or "").strip().splitlines()[0]
            lines.extend(["", f"`[{'.'.join(path)}]`: {doc.split(': ', 1)[-1]}", ""])
            lines.extend(["| key | type | default | meaning |", "|---|---|---|---|"])
            for name in scalars:
                dotted = ".".join((*path, name))
                common = isinstance(obj, SubscriberSettings) and name in ("enabled", "on_error")
                meaning = HELP.get(name if common else dotted, "")
                value = _default(getattr(obj, name))
                lines.append(f"| `{name}` | {_allowed(hints[name])} | {value} | {meaning} |")
        for name in attrs.fields_dict(type(obj)):
            if attrs.has(hints[name]):
                table(getattr(obj, name), (*path, name))

    table(Settings(), ())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
