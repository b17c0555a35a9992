"""Several machines: the ranks that a launcher started agree on one run, over the process group.

The same command runs on every node, under one of Lightning's launch environments:

- ``torchrun`` (TorchElastic: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``);
- a SLURM allocation, ``srun`` starting one task per device (``SLURM_PROCID``,
  ``SLURM_NTASKS``, ...; the address and port Lightning's `SLURMEnvironment` derives);
- Lightning's own variables (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``), one
  process per node (``[trainer].devices = 1``).

Every process exists before the Trainer does, so `join` opens the process group
Lightning would open (Lightning finds it open and uses it), and `from_rank_zero` runs the
scan and the choice of the run directory on global rank zero only and sends the result,
or its error, to every rank. Nothing is passed through an environment variable (only
processes forked from rank zero would see it) and nothing assumes a file system shared
beyond the output directory: each node keeps its own ``$HARNESS_CACHE`` and ``$TMPDIR``.
Processes that Lightning's own ``ddp`` launcher forks on one machine learn the run from
their parent instead (see `harness.training.run_dir`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar, cast

import attrs
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments.cluster_environment import ClusterEnvironment
from lightning.fabric.plugins.environments.lightning import LightningEnvironment
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
from lightning.fabric.plugins.environments.torchelastic import TorchElasticEnvironment

from harness.core.context import DatasetInfo
from harness.core.errors import HarnessError, SettingsError
from harness.settings.tree import DataSettings, TrainerSettings
from harness.training.data import materialise_digits, scan

__all__ = ["Launch", "from_rank_zero", "join", "launch_of", "rebase", "scan_once"]

T = TypeVar("T")

_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits for the others (rank zero's scan of a large tree included)."""


@attrs.frozen(kw_only=True)
class Launch:
    """This process's place among the processes a launcher started on several machines."""

    launcher: str
    rank: int
    world_size: int
    environment: ClusterEnvironment

    @property
    def is_zero(self) -> bool:
        return self.rank == 0


def _per_node(trainer: TrainerSettings) -> int:
    if isinstance(trainer.devices, int):
        return trainer.devices
    if trainer.accelerator in ("gpu", "cuda") or (
        trainer.accelerator == "auto" and torch.cuda.is_available()
    ):
        return max(1, torch.cuda.device_count())
    return 1


def launch_of(trainer: TrainerSettings) -> Launch | None:
    """The launch that started this process with others, checked against the settings.

    None for a process alone, and for one that Lightning's own ``ddp`` launcher starts or
    forked (one machine). Raises `SettingsError` when ``[trainer].num_nodes`` and
    ``devices`` do not multiply to the number of processes the launcher started.
    """
    per_node = _per_node(trainer)
    environment: ClusterEnvironment
    # Lightning's own order (lightning 2.6.6, _AcceleratorConnector): TorchElastic, then SLURM.
    if TorchElasticEnvironment.detect():
        environment, launcher = TorchElasticEnvironment(), "torchrun (WORLD_SIZE)"
        world_size, rank = environment.world_size(), environment.global_rank()
    elif SLURMEnvironment.detect():
        environment, launcher = SLURMEnvironment(), "SLURM (SLURM_NTASKS)"
        world_size, rank = environment.world_size(), environment.global_rank()
    elif trainer.num_nodes > 1:
        if "LOCAL_RANK" in os.environ:
            return None  # forked by its node's first process, which told it the run directory
        if per_node != 1:
            raise SettingsError(
                f"[trainer].num_nodes = {trainer.num_nodes} with devices = {trainer.devices} under "
                "Lightning's own variables (NODE_RANK): start one process per device with torchrun "
                "--nproc-per-node or srun, or set [trainer].devices = 1"
            )
        environment, launcher = LightningEnvironment(), "Lightning's variables (NODE_RANK)"
        world_size, rank = trainer.num_nodes, environment.node_rank()
        environment.set_world_size(world_size)
        environment.set_global_rank(rank)
        if not 0 <= rank < world_size:
            raise SettingsError(
                f"NODE_RANK = {rank} is outside the {world_size} node(s) of [trainer].num_nodes"
            )
    else:
        return None
    if trainer.num_nodes * per_node != world_size:
        raise SettingsError(
            f"[trainer].num_nodes = {trainer.num_nodes} times devices = {per_node} is "
            f"{trainer.num_nodes * per_node} process(es), but {launcher} started {world_size}: "
            "set num_nodes to the number of machines and devices to the processes on each"
        )
    if world_size == 1:
        return None
    return Launch(launcher=launcher, rank=rank, world_size=world_size, environment=environment)


def join(launch: Launch, trainer: TrainerSettings) -> None:
    """Open the process group Lightning would open for this launch (it then uses this one)."""
    if dist.is_initialized():
        return
    gpu = trainer.accelerator in ("gpu", "cuda") or (
        trainer.accelerator == "auto" and torch.cuda.is_available()
    )
    # Lightning's choice for its DDP strategy: NCCL on CUDA devices, gloo on the CPU.
    os.environ["MASTER_ADDR"] = launch.environment.main_address
    os.environ["MASTER_PORT"] = str(launch.environment.main_port)
    dist.init_process_group(
        "nccl" if gpu else "gloo", rank=launch.rank, world_size=launch.world_size, timeout=_TIMEOUT
    )


def from_rank_zero(launch: Launch | None, compute: Callable[[], T]) -> T:
    """`compute()` on global rank zero, its result (or its `HarnessError`) on every rank.

    Without a launch, `compute()` here. The result travels pickled over a gloo group
    (CPU tensors, whatever the training backend), so it must be picklable.
    """
    if launch is None:
        return compute()
    if launch.is_zero:
        try:
            result = compute()
        except HarnessError as error:
            _broadcast([_Refused(error=error)])
            raise
        _broadcast([result])
        return result
    received: list[object] = [None]
    _broadcast(received)
    if isinstance(received[0], _Refused):
        raise received[0].error
    return cast("T", received[0])


@attrs.frozen(kw_only=True)
class _Refused:
    """Rank zero's error, for the other ranks to raise."""

    error: HarnessError


def _broadcast(objects: list[object]) -> None:
    group = None
    if dist.get_backend() != "gloo":
        # new_group is itself a collective: every rank reaches this line in the same order.
        made = dist.new_group(backend="gloo")
        assert isinstance(made, dist.ProcessGroup)
        group = made
    dist.broadcast_object_list(objects, src=0, group=group)


def scan_once(
    launch: Launch | None, settings: DataSettings, seed: int
) -> tuple[DatasetInfo, tuple[str, ...]]:
    """`scan` on global rank zero, its result on every rank.

    The embedded data set (``[data].root`` empty) lives in each node's own cache
    (``$HARNESS_CACHE``): the other ranks write theirs and read rank zero's list there.
    """
    info, classes = from_rank_zero(launch, lambda: scan(settings, seed))
    if launch is not None and not launch.is_zero and not settings.root:
        info = rebase(info, str(info.root), str(materialise_digits()))
    return info, classes


def rebase(info: DatasetInfo, root: str, own_root: str) -> DatasetInfo:
    """`info` as scanned under `root`, with its files under `own_root` instead."""
    if root == own_root:
        return info

    def moved(samples: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
        return tuple((own_root + path[len(root) :], target) for path, target in samples)

    return attrs.evolve(
        info,
        root=type(info.root)(own_root),
        train=moved(info.train),
        val=moved(info.val),
        test=moved(info.test),
    )
