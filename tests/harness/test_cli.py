"""The `harness` command: a subcommand per tool, each with its own --help and exit codes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import SUBCOMMANDS, main
from harness.core.layout import RunLayout

ROOT = Path(__file__).resolve().parents[2]
PRESENT = [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module)]


@pytest.mark.parametrize("name", PRESENT)
def test_every_subcommand_has_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m " + SUBCOMMANDS[name][0])


def test_the_list_of_commands_and_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in PRESENT:
        assert f"  {name} " in listed
    assert ("  evaluate " in listed) == ("evaluate" in PRESENT), "evaluate appears once it exists"
    assert main(["fit"]) == 2
    assert "unknown command 'fit'" in capsys.readouterr().err
    assert main([]) == 2


def test_a_subcommand_runs_the_tool_with_its_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = RunLayout(tmp_path)
    assert main(["report", str(tmp_path)]) == 2  # not a run directory yet
    layout.settings.write_text("")
    layout.labels.write_text("[]")
    assert main(["report", str(tmp_path)]) == 0
    assert layout.report.is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert main(["train", "--set", "model.lr=-1"]) == 2
    assert "[model].lr" in capsys.readouterr().err


def test_python_dash_m_harness_is_the_command_and_predict_stays_torch_free() -> None:
    code = (
        "import sys; from harness.cli import main; main(['predict', '--help']); print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.stdout.strip().endswith("False"), done.stdout + done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "train" in done.stdout
