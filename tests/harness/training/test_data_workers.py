"""Loader workers ignore SIGTERM (a group signal must not fail a batch), yet never hold a process at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_FAILED_FIT = textwrap.dedent(
    """
    import multiprocessing
    import sys
    from functools import partial

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from harness.training.stop_signal import start_data_worker

    loader = DataLoader(
        TensorDataset(torch.arange(64.0)),
        batch_size=4,
        num_workers=2,
        persistent_workers=True,
        worker_init_fn=partial(start_data_worker, rank=0),
    )

    def fail() -> None:
        batches = iter(loader)
        next(batches)
        try:
            raise RuntimeError("a failed fit keeps its loaders alive through its traceback")
        except RuntimeError as error:
            global kept
            kept = error


    if __name__ == "__main__":
        if sys.argv[1] == "here":
            fail()
        else:  # a rank of `ddp_spawn`: a process multiprocessing starts, where atexit never runs
            rank = multiprocessing.get_context("spawn").Process(target=fail)
            rank.start()
            rank.join(30)
            print("rank", "alive" if rank.is_alive() else rank.exitcode, flush=True)
            if rank.is_alive():
                rank.kill()
        print("leaving", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["here", "spawned"])
def test_a_process_whose_loader_workers_ignore_sigterm_still_exits(tmp_path: Path, where: str) -> None:
    script = tmp_path / "failed_fit.py"
    script.write_text(_FAILED_FIT, encoding="utf-8")
    # multiprocessing's exit handler SIGTERMs its daemonic children and waits for them
    # without a limit: without `end_data_workers` this process never ends.
    # Lightning's seed_everything(workers=True) leaves PL_SEED_WORKERS=1 (the run's own
    # case): seeded workers die differently, and torch's SIGCHLD handler then raised.
    environment = {**os.environ, "PL_SEED_WORKERS": "1", "PL_GLOBAL_SEED": "0"}
    done = subprocess.run(
        [sys.executable, str(script), where],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    expected = ["leaving"] if where == "here" else ["rank 0", "leaving"]
    assert done.stdout.split("\n")[:-1] == expected, done.stderr
