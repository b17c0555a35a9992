"""The harness's own settings tables, one frozen attrs class per TOML table.

Each field is an `harness.core.options.option`: a default, a one-line help (the
settings reference is generated from it) and validators. Subscribers' tables are not
here: each subscriber module owns its settings class and names it in its spec, and
`Settings.subscribers` maps each table name to its validated settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from harness.core.options import Validator, at_least, check, finite, option, positive, within
from harness.core.preprocessing import Preprocessing
from harness.core.spec import SubscriberSettings

__all__ = [
    "AugmentSettings",
    "CheckpointSettings",
    "DataSettings",
    "EarlyStoppingSettings",
    "LoggerSettings",
    "ModelSettings",
    "RunSettings",
    "Settings",
    "TrainerSettings",
]


def _batches_limit() -> Validator:
    return check(
        lambda v: (
            (isinstance(v, int) and not isinstance(v, bool) and v > 0)
            or (isinstance(v, float) and 0 < v <= 1)
        ),
        "a fraction in (0, 1.0] or a whole number of batches",
    )


def _range(low: float, high: float) -> Validator:
    return check(
        lambda v: len(v) == 2 and low <= v[0] <= v[1] <= high and v[0] > 0,
        f"[min, max] with 0 < min <= max <= {high:g}",
    )


def _fractions() -> Validator:
    return check(
        lambda v: all(0 < f < 1 for f in v) and list(v) == sorted(v), "increasing fractions in (0, 1)"
    )


NAME_LIMIT = 128
"""The most characters a run name may have (a folder name; file systems allow 255 bytes)."""
IMAGE_SIZE_LIMIT = 2048
"""The largest image side: a batch of 64 such images is already 3 GB of float32."""


def _folder_name() -> Validator:
    return check(
        lambda v: (
            isinstance(v, str)
            and 0 < len(v) <= NAME_LIMIT
            and v not in (".", "..")
            and not any(c in v for c in "/\\\0")
            and v.isprintable()
        ),
        f"one folder name of 1 to {NAME_LIMIT} printable characters, without '/', '\\', '.' or '..'",
    )


def _positive_or_auto() -> Validator:
    return check(lambda v: v == "auto" or (isinstance(v, int) and v > 0), 'a positive integer or "auto"')


@attrs.frozen(kw_only=True)
class RunSettings:
    """[run]: where the run directory goes, what seeds it, which plugins join it."""

    name: str = option(
        "digits",
        "run directories go under `<output_dir>/<name>/version_<n>/`; one folder name",
        _folder_name(),
    )
    output_dir: str = option("runs", "where run directories are made")
    seed: int = option(0, "seeds Python, NumPy, torch, the split and the sampler")
    plugins: tuple[str, ...] = option(
        (),
        "plugin subscribers: `package.module:NAME` (a spec or a subscriber class) or an installed "
        "entry point's name; options in `[subscribers.<name>]`",
    )
    record_events: bool = option(True, "write `events.jsonl` (what `harness.replay` reads)")
    terminal: Literal["quiet", "normal", "verbose"] = option(
        "normal", "`quiet`: warnings only; `normal`: tables at start, a line per epoch; `verbose`: all"
    )


@attrs.frozen(kw_only=True)
class DataSettings:
    """[data]: an ImageFolder tree, or "" for the embedded digits set."""

    root: str = option(
        "",
        '`""` for the embedded digits set, else an ImageFolder tree (optionally `train/` + `val/` '
        "(or `valid/`, `validation/`), and `test/`), or a streamed data set (`harness data optimize`; "
        "a folder, `s3://`, `gs://`)",
    )
    image_size: int = option(
        32,
        f"images are resized to a square of this side, 8 to {IMAGE_SIZE_LIMIT}",
        within(8, IMAGE_SIZE_LIMIT, closed="[]"),
    )
    batch_size: int = option(
        64, "images per batch (per process); at least 2 for a network with BatchNorm", positive()
    )
    val_fraction: float = option(
        0.2, "stratified, seeded validation share when the tree has no `val/`", within(0, 1, closed="()")
    )
    sampling: Literal["auto", "shuffle", "balanced"] = option(
        "auto",
        "`shuffle`: every image once per epoch; `balanced`: draws weighted 1 / class count, with "
        "replacement; `auto`: balanced when the largest class has 2x the images of the smallest "
        "(and `class_weights` is off), else shuffle",
    )
    class_weights: Literal["none", "auto"] = option(
        "none", "`auto`: weigh the training loss by 1 / class count (instead of balanced sampling)"
    )
    num_workers: int | Literal["auto"] = option(
        "auto",
        'data-loader worker processes; "auto": the cores this process may use minus one, at most 8',
        check(
            lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
            '"auto" or >= 0',
        ),
    )
    decode: Literal["cpu", "gpu"] = option(
        "cpu",
        '`"gpu"`: the loader\'s workers read bytes and the JPEGs are decoded and transformed on the CUDA '
        "device (`torchvision.io.decode_jpeg`); a run on the CPU or from a streamed data set refuses it",
    )
    on_corrupt: Literal["stop", "skip"] = option(
        "stop", "unreadable images: stop before training, or skip them with a count"
    )
    resize: Literal["squash", "crop"] = option(
        "squash",
        "evaluation (and export) preprocessing: squash the whole image to the square, or resize "
        "the shorter side to `image_size / crop_fraction` and centre crop",
    )
    crop_fraction: float = option(
        0.875, 'the share of the shorter side a `"crop"` keeps (timm\'s crop_pct)', within(0, 1, closed="(]")
    )
    unknown_classes: Literal["stop", "skip"] = option(
        "stop",
        "class folders in `val/` or `test/` that `train/` lacks: stop naming them, or leave them out "
        "with a warning",
    )
    check_duplicates: bool = option(
        True,
        "warn at fit start about images whose decoded pixels are in two splits or two classes "
        "(decodes each new file once; `harness audit` finds the rest)",
    )

    def preprocessing(self) -> Preprocessing:
        """The evaluation preprocessing these settings ask for (what export and predict record)."""
        crop = self.crop_fraction if self.resize == "crop" else 1.0
        return Preprocessing(image_size=self.image_size, resize=self.resize, crop_fraction=crop)


@attrs.frozen(kw_only=True)
class AugmentSettings:
    """[augment]: training-time augmentation (validation and export never see it)."""

    preset: Literal["auto", "photos", "symbols"] = option(
        "auto",
        'the kind of data, for `hflip = "preset"`: photos flip, symbols (digits, text) do not; '
        "`auto`: a flip probe on the training images decides",
    )
    crop_scale: tuple[float, float] = option(
        (0.7, 1.0),
        "random resized crop: share of the evaluation frame's area kept, [min, max]; [1, 1] with "
        "ratio [1, 1] is no crop",
        _range(0, 1),
    )
    crop_ratio: tuple[float, float] | Literal["auto"] = option(
        "auto",
        "random resized crop: aspect ratio range, [min, max], against the evaluation frame; `auto`: "
        '[0.9, 1.1] with `resize = "squash"`, timm\'s [3/4, 4/3] with `"crop"`',
        check(lambda v: v == "auto" or (len(v) == 2 and 0 < v[0] <= v[1] <= 10), '"auto" or [min, max]'),
    )
    hflip: float | Literal["preset"] = option(
        "preset",
        'probability of a horizontal flip; `"preset"`: 0.5 for photos, 0 for symbols',
        check(lambda v: v == "preset" or 0 <= v <= 1, '"preset" or in [0, 1]'),
    )
    auto_augment: Literal["none", "trivial", "rand", "auto"] = option(
        "none", "TrivialAugmentWide, RandAugment, AutoAugment (ImageNet policy) or none"
    )
    magnitude: int = option(9, "RandAugment magnitude (0-30)", within(0, 30, closed="[]"))
    color_jitter: float = option(
        0.2, "brightness, contrast and saturation jitter strength, 0 for none", within(0, 1, closed="[]")
    )
    erasing: float = option(
        0.0, "probability of random erasing (after normalisation)", within(0, 1, closed="[]")
    )
    mixup_alpha: float = option(0.0, "MixUp Beta(alpha, alpha), 0 for none", at_least(0))
    cutmix_alpha: float = option(
        0.0, "CutMix Beta(alpha, alpha), 0 for none; with MixUp, one of the two per batch", at_least(0)
    )
    mix_prob: float = option(
        1.0, "probability that a batch is mixed when MixUp or CutMix is on", within(0, 1, closed="[]")
    )

    def ratio_range(self, resize: Literal["squash", "crop"]) -> tuple[float, float]:
        """`crop_ratio`, with "auto" resolved for the evaluation resize."""
        if self.crop_ratio != "auto":
            return self.crop_ratio
        return (0.9, 1.1) if resize == "squash" else (3 / 4, 4 / 3)

    @property
    def flip_probability(self) -> float:
        """`hflip`; "preset" left unresolved (no preset chosen yet) is the symbols' 0: never flip."""
        return 0.0 if self.hflip == "preset" else self.hflip

    @property
    def mixes(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


@attrs.frozen(kw_only=True)
class ModelSettings:
    """[model]: a torchvision (or timm) architecture, its starting weights, and how it is optimised."""

    arch: str = option(
        "resnet18", 'any torchvision classification architecture, or `"timm:<name>"` (the `timm` extra)'
    )
    lr: float = option(1e-3, "peak learning rate (after warm-up)", positive(), finite())
    weight_decay: float = option(0.05, "weight decay (decoupled for AdamW)", at_least(0))
    optimizer: Literal["sgd", "adamw"] = option("adamw", "AdamW, or SGD (Nesterov momentum 0.9)")
    scheduler: Literal["cosine", "step", "none"] = option(
        "cosine", "decay after warm-up, stepped per optimizer step: cosine to 0, steps, or constant"
    )
    warmup: float = option(1.0, "linear warm-up length, in `warmup_unit`s", at_least(0))
    warmup_unit: Literal["epochs", "steps"] = option("epochs", "the unit of `warmup`")
    step_milestones: tuple[float, ...] = option(
        (0.5, 0.75),
        '`"step"` decay: shares of the schedule after which the rate is multiplied by `step_gamma`',
        _fractions(),
    )
    step_gamma: float = option(0.1, '`"step"` decay factor', within(0, 1, closed="(]"))
    label_smoothing: float = option(0.1, "cross-entropy label smoothing", within(0, 1))
    weights: str = option(
        "",
        '`""` random; a weights name (`"DEFAULT"`, `"IMAGENET1K_V1"`, ...) from the torch hub cache '
        "(`TORCH_HOME`), downloaded only when not cached; or a local state-dict file",
    )
    freeze_backbone_epochs: int = option(
        0, "epochs, from the first, in which only the classification head learns", at_least(0)
    )
    backbone_lr_scale: float = option(
        1.0, "the backbone's learning rate as a fraction of `lr` (the head's)", within(0, 1, closed="(]")
    )
    channels_last: bool | Literal["auto"] = option(
        "auto",
        'channels-last (NHWC) weights and inputs; `"auto"`: on for a convolutional net on a GPU',
        check(lambda v: v == "auto" or isinstance(v, bool), '"auto", true or false'),
    )
    compile: bool = option(
        False,
        "`torch.compile` the network for the training and validation steps (the export takes the plain one)",
    )


@attrs.frozen(kw_only=True)
class TrainerSettings:
    """[trainer]: what Lightning's Trainer is given."""

    max_epochs: int = option(8, "epochs to train", positive())
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = option("auto", "Lightning's accelerator")
    devices: int | str = option(
        "auto", "devices (processes) to use on each machine, or `auto`", _positive_or_auto()
    )
    num_nodes: int = option(
        1,
        "machines the run spans (`torchrun --nnodes`, SLURM `--nodes`); `devices` is per machine",
        positive(),
    )
    strategy: Literal["auto", "ddp", "ddp_spawn"] = option(
        "auto", "Lightning's strategy; `ddp` for several devices"
    )
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true", "auto"] = option(
        "auto",
        'Lightning\'s precision; `"auto"`: `bf16-mixed` on a GPU with bfloat16, `16-mixed` on an older '
        "GPU, `32-true` on the CPU",
    )
    resume: str = option("", '`""` fresh, `"last"` the newest run of this name, or a checkpoint path')
    accumulate_grad_batches: int = option(1, "batches per optimizer step", positive())
    gradient_clip_val: float = option(0.0, "gradient norm clip, 0 for none", at_least(0))
    limit_train_batches: int | float = option(
        1.0, "a fraction (float) or a count (integer) of training batches", _batches_limit()
    )
    limit_val_batches: int | float = option(
        1.0, "a fraction (float) or a count (integer) of validation batches", _batches_limit()
    )
    num_sanity_val_steps: int = option(2, "validation batches run before training", at_least(0))
    progress_bar: bool = option(True, "rich progress bar")
    log_every_n_steps: int = option(10, "CSV logging interval in steps", positive())


@attrs.frozen(kw_only=True)
class CheckpointSettings:
    """[checkpoint]: Lightning's ModelCheckpoint."""

    enabled: bool = option(True, "Lightning's ModelCheckpoint")
    monitor: str = option("val/acc_top1", "metric that ranks checkpoints (and early stopping)")
    mode: Literal["max", "min"] = option("max", "whether a higher or lower monitor is better")
    save_top_k: int = option(1, "best checkpoints kept (-1 all)", at_least(-1))
    save_last: bool = option(True, "also keep `last.ckpt` (what resume uses)")


@attrs.frozen(kw_only=True)
class EarlyStoppingSettings:
    """[early_stopping]: Lightning's EarlyStopping on the checkpoint's monitor."""

    enabled: bool = option(False, "Lightning's EarlyStopping on the checkpoint monitor")
    patience: int = option(5, "epochs without improvement before stopping", positive())
    min_delta: float = option(0.0, "smallest change that counts as improvement", at_least(0))


TRACKER_KINDS = ("csv", "tensorboard", "mlflow")


@attrs.frozen(kw_only=True)
class LoggerSettings:
    """[logger]: the experiment trackers, through Lightning's own loggers."""

    kinds: tuple[str, ...] = option(
        ("csv",),
        '`"csv"`, `"tensorboard"` (extra `.[tensorboard]`), `"mlflow"` (extra `.[mlflow]`); several at once',
        check(
            lambda v: bool(v) and len(set(v)) == len(v) and all(k in TRACKER_KINDS for k in v),
            f"a non-empty list of distinct names from {list(TRACKER_KINDS)}",
        ),
    )
    mlflow_tracking_uri: str = option(
        "", '`""`: a local file store, `<run_dir>/mlruns`; else an MLflow tracking URI'
    )
    mlflow_experiment: str = option("", '`""`: the run name (`[run].name`)')


@attrs.frozen(kw_only=True)
class Settings:
    """The whole settings file.

    `subscribers` maps each subscriber's table name (its spec's name) to its validated
    settings, built-ins and the plugins of ``[run].plugins`` alike; `load_settings` fills it.
    """

    run: RunSettings = attrs.Factory(RunSettings)
    data: DataSettings = attrs.Factory(DataSettings)
    model: ModelSettings = attrs.Factory(ModelSettings)
    augment: AugmentSettings = attrs.Factory(AugmentSettings)
    trainer: TrainerSettings = attrs.Factory(TrainerSettings)
    checkpoint: CheckpointSettings = attrs.Factory(CheckpointSettings)
    early_stopping: EarlyStoppingSettings = attrs.Factory(EarlyStoppingSettings)
    logger: LoggerSettings = attrs.Factory(LoggerSettings)
    subscribers: Mapping[str, SubscriberSettings] = attrs.field(factory=dict)
