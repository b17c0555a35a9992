"""The reduction helpers: a no-op on one process, a sum and a gather across two real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.core.distributed import all_gather, all_sum, world_size

# Each process counts its own shard; both must end with the whole run's counts.
TWO_RANKS = """
import json, os, sys
import torch
import torch.distributed as dist
from harness.core.distributed import all_gather, all_sum, world_size

rank = int(os.environ["RANK"])
dist.init_process_group("gloo", rank=rank, world_size=2)
counts = torch.tensor([1, 2, 3]) if rank == 0 else torch.tensor([10, 0, 5])
summed = all_sum(counts)
names = all_gather([f"image_{rank}_{n}.png" for n in range(rank + 1)])
print(json.dumps({"size": world_size(), "sum": summed.tolist(), "counts": counts.tolist(), "names": names}))
dist.destroy_process_group()
"""


def test_on_one_process_they_return_their_input() -> None:
    counts = torch.tensor([4, 0, 2])
    assert world_size() == 1
    assert all_sum(counts) is counts
    assert all_gather({"recall": 0.5}) == [{"recall": 0.5}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_two_processes_get_the_sum_and_every_rank_s_values(tmp_path: Path) -> None:
    env_base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}

    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_RANKS],
            env={**os.environ, **env_base, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [process.communicate(timeout=120) for process in ranks]
    for process, (_, err) in zip(ranks, outputs, strict=True):
        assert process.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for result in results:
        assert result["size"] == 2
        assert result["sum"] == [11, 2, 8]
        assert result["names"] == [["image_0_0.png"], ["image_1_0.png", "image_1_1.png"]]
    assert [result["counts"] for result in results] == [[1, 2, 3], [10, 0, 5]], "the inputs stay as they were"
