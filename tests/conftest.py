"""Shared fixtures: a tiny ImageFolder tree and fast settings for end-to-end runs."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.core.testing import write_imagefolder
from harness.settings import Settings, load_settings
from subscribers import BUILTIN

SUBSCRIBER_NAMES = tuple(spec.name for spec in BUILTIN)

MakeSettings = Callable[..., Settings]


@pytest.fixture
def tiny_imagefolder(tmp_path: Path) -> Path:
    """Three classes of twelve 12x12 images each."""
    return write_imagefolder(tmp_path / "data", {"red": 12, "green": 12, "blue": 12})


@pytest.fixture
def make_settings(tmp_path: Path, tiny_imagefolder: Path) -> MakeSettings:
    """Fast settings on the tiny tree: `make_settings("ema", "plots", "trainer.max_epochs=2")`.

    Subscribers named are enabled, every other one disabled; `key=value` items override.
    """

    def make(*items: str, root: Path | None = None) -> Settings:
        enabled = {item for item in items if "=" not in item}
        unknown = enabled - set(SUBSCRIBER_NAMES)
        assert not unknown, f"unknown subscribers {unknown}"
        overrides: Sequence[str] = [
            f"data.root={str(root or tiny_imagefolder)!r}",
            "data.image_size=16",
            "data.batch_size=8",
            "model.arch='resnet18'",
            "trainer.max_epochs=1",
            "trainer.accelerator='cpu'",
            "trainer.devices=1",
            "trainer.num_sanity_val_steps=1",
            "trainer.progress_bar=false",
            f"run.output_dir={str(tmp_path / 'runs')!r}",
            *(
                f"subscribers.{name}.enabled={'true' if name in enabled else 'false'}"
                for name in SUBSCRIBER_NAMES
            ),
            *(item for item in items if "=" in item),
        ]
        return load_settings(None, overrides)

    return make


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A process a test left behind (e.g. a ``ddp_spawn`` rank) is ended, and fails the session.

    multiprocessing's exit handler waits for every child without a limit: a rank stuck in a
    collective after its peer failed would otherwise hold pytest, and CI, forever.
    """
    left = multiprocessing.active_children()
    for child in left:
        child.kill()
        child.join(10)
    if left:
        names = ", ".join(f"{child.name} (pid {child.pid})" for child in left)
        print(f"\nprocesses left running by the tests, killed: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
