"""The README's tour, run as written: a plugin with its own options, its test, a real fit.

The code blocks of the tour that start with ``# <file name>`` are written to a temporary
folder, imported from there, and used as a user would: the settings table reaches the
subscriber typed, a misspelt key stops the run before it starts, the state survives a
resume after the module moved, and ``mypy --strict`` checks it against the installed
package.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import SettingsError
from harness.run import main
from harness.settings.plugins import resolve_plugin
from harness.training.fit import run
from tests.conftest import MakeSettings

README = Path(__file__).parents[3] / "README.md"


def tour_files(folder: Path) -> dict[str, Path]:
    """The README's code blocks that start with ``# <file name>``, written to `folder`."""
    written: dict[str, Path] = {}
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", README.read_text(), flags=re.S):
        first, _, body = block.partition("\n")
        if match := re.fullmatch(r"# ([\w.]+\.(?:py|toml))", first.strip()):
            path = folder / match.group(1)
            path.write_text(body if path.suffix == ".toml" else block)
            written[match.group(1)] = path
    return written


@pytest.fixture
def tour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    folder = tmp_path / "user"
    folder.mkdir()
    files = tour_files(folder)
    assert {"loss_spikes.py", "test_loss_spikes.py", "settings.toml"} <= set(files)
    monkeypatch.syspath_prepend(str(folder))
    for name in [m for m in sys.modules if m in ("loss_spikes", "test_loss_spikes", "renamed_spikes")]:
        del sys.modules[name]
    return files


def test_the_tour_test_is_short_and_passes(tour: dict[str, Path], tmp_path: Path) -> None:
    source = tour["test_loss_spikes.py"].read_text().strip().splitlines()
    assert len(source) <= 15
    namespace: dict[str, object] = {}
    exec(compile("\n".join(source), str(tour["test_loss_spikes.py"]), "exec"), namespace)
    test = namespace["test_a_jump_in_the_loss_is_a_spike_and_stops_the_run"]
    assert callable(test)
    test(tmp_path / "unit")


def run_settings(tour: dict[str, Path], make_settings: MakeSettings, *extra: str) -> list[str]:
    """The tour's settings file, as `make_settings` overrides on the tiny data set."""
    text = tour["settings.toml"].read_text()
    factor = re.search(r"factor = ([\d.]+)", text)
    action = re.search(r'action = "(\w+)"', text)
    plugins = re.search(r"plugins = (\[.*\])", text)
    assert factor and action and plugins
    return [
        f"run.plugins={plugins.group(1)}",
        f"subscribers.loss_spikes.factor={factor.group(1)}",
        f"subscribers.loss_spikes.action='{action.group(1)}'",
        *extra,
    ]


@pytest.mark.slow
def test_a_plugin_gets_its_typed_options_in_a_real_fit_and_keeps_its_state_when_moved(
    tour: dict[str, Path], make_settings: MakeSettings
) -> None:
    settings = make_settings(*run_settings(tour, make_settings, "trainer.max_epochs=1"))
    assert settings.subscribers["loss_spikes"].factor == 2.5
    first = run(settings)
    found = json.loads((first.run_dir / "loss_spikes.json").read_text())
    assert found["factor"] == 2.5 and isinstance(found["factor"], float)
    steps_per_epoch = found["steps"]
    assert steps_per_epoch > 0

    # The module moves; the table name, and so the checkpoint key, stays.
    moved = tour["loss_spikes.py"].with_name("renamed_spikes.py")
    shutil.move(tour["loss_spikes.py"], moved)
    resumed = run(
        make_settings(
            *run_settings(tour, make_settings, "trainer.max_epochs=2", "trainer.resume='last'"),
            "run.plugins=['renamed_spikes:SPEC']",
        )
    )
    assert resumed.run_dir == first.run_dir
    again = json.loads((resumed.run_dir / "loss_spikes.json").read_text())
    assert again["steps"] == 2 * steps_per_epoch, "the state came back under the table name"


def test_a_misspelt_plugin_option_stops_before_anything_starts(
    tour: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--set",
            "run.plugins=['loss_spikes:SPEC']",
            "--set",
            "subscribers.loss_spikes.factr=2",
            "--set",
            f"run.output_dir='{tmp_path / 'runs'}'",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown key 'subscribers.loss_spikes.factr'; did you mean 'factor'?" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_harness_train_imports_a_plugin_from_the_current_directory_as_python_m_does(
    tour: dict[str, Path], tmp_path: Path
) -> None:
    """The console script starts with its bin/ folder on sys.path, ``python -m`` with the current one."""
    script = Path(sys.executable).with_name("harness")
    assert script.is_file(), "the harness console script of this environment"
    settings = [
        "--set",
        "run.plugins=['loss_spikes:SPEC']",
        "--set",
        "subscribers.loss_spikes.factr=2",
        "--set",
        f"run.output_dir='{tmp_path / 'runs'}'",
    ]
    for command in ([str(script), "train"], [sys.executable, "-m", "harness.run"]):
        out = subprocess.run(
            [*command, *settings], cwd=tour["loss_spikes.py"].parent, capture_output=True, text=True
        )
        # Only an imported plugin has options to misspell.
        assert out.returncode == 2
        assert "unknown key 'subscribers.loss_spikes.factr'; did you mean 'factor'?" in out.stderr, command
    assert not (tmp_path / "runs").exists()


def test_a_plugin_module_not_found_says_how_to_make_it_importable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        resolve_plugin("spike_watch.alarms:SPEC")
    message = str(raised.value)
    assert "No module named 'spike_watch'" in message
    assert "run from the folder that holds spike_watch/alarms.py, set PYTHONPATH to that folder" in message
    broken = tmp_path / "needs_more.py"
    broken.write_text("import not_installed_anywhere\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(SettingsError, match="the plugin imports it: install it"):
            resolve_plugin("needs_more:SPEC")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("needs_more", None)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("subscribers.loss_spikes.factor=-1", "[subscribers.loss_spikes].factor must be positive, got -1.0"),
        (
            "subscribers.loss_spikes.factor='big'",
            "[subscribers.loss_spikes].factor must be a number, got 'big'",
        ),
        (
            "subscribers.loss_spikes.action='panic'",
            "[subscribers.loss_spikes].action must be one of 'log', 'stop'",
        ),
    ],
)
def test_plugin_options_are_validated_like_the_built_ins(
    tour: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    argv = ["--set", "run.plugins=['loss_spikes:SPEC']", "--set", override]
    assert main([*argv, "--set", f"run.output_dir='{tmp_path / 'runs'}'"]) == 2
    assert message in capsys.readouterr().err


def project_copy(folder: Path) -> Path:
    """The distribution's files, copied: setuptools' build/ and egg-info stay out of the checkout."""
    root = Path(__file__).parents[3]
    for name in ("harness", "subscribers"):
        shutil.copytree(root / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, folder / name)
    return folder


def mypy_strict(
    folder: Path, file: str, python: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``mypy --strict FILE`` in `folder`, against the packages `python` sees."""
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", python]
    return subprocess.run(
        [*mypy, file], cwd=folder, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )


@pytest.mark.slow
def test_mypy_strict_finds_the_installed_package_typed(tour: dict[str, Path], tmp_path: Path) -> None:
    """Built as a wheel and installed apart, as a user's environment has it: py.typed ships."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
    ]
    subprocess.run([*build, str(project_copy(tmp_path / "source"))], check=True, capture_output=True)
    [wheel] = wheels.glob("harness-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    assert (site / "harness" / "py.typed").is_file()
    bad = tour["loss_spikes.py"].with_name("bad_spikes.py")
    bad.write_text(
        tour["loss_spikes.py"].read_text().replace("loss = float(event.loss)", "loss: str = event.loss")
    )
    env = {"PYTHONPATH": str(site)}
    good = mypy_strict(bad.parent, "loss_spikes.py", sys.executable, env)
    assert good.returncode == 0, good.stdout
    wrong = mypy_strict(bad.parent, "bad_spikes.py", sys.executable, env)
    assert (
        wrong.returncode == 1
        and 'Incompatible types in assignment (expression has type "Tensor"' in wrong.stdout
    ), wrong.stdout


@pytest.mark.slow
def test_mypy_strict_finds_the_package_of_the_readmes_editable_install(
    tour: dict[str, Path], tmp_path: Path
) -> None:
    """``pip install -e .`` (the README's set-up) in a fresh environment: mypy sees ``harness``.

    setuptools' default editable install of a flat layout is an import hook that mypy cannot
    follow ("Cannot find implementation or library stub for module named harness");
    pyproject's ``package-dir`` makes it a plain path. The new environment reaches this
    one's packages (torch, pip, setuptools) through a path file of its own, whose lines
    Python and mypy both follow.
    """
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
    python = str(environment / "bin" / "python")
    query = "import site, sys; print(site.getsitepackages()[0]); print(sys.version_info[:2])"
    where = subprocess.run([python, "-c", query], check=True, capture_output=True, text=True)
    own_site = Path(where.stdout.splitlines()[0])
    assert where.stdout.splitlines()[1] == str(sys.version_info[:2])
    # Sorted after setuptools' path file: the editable harness wins over this environment's.
    (own_site / "zz_outer_environment.pth").write_text("\n".join(site_packages()) + "\n")
    install = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    source = project_copy(tmp_path / "source")
    subprocess.run(
        [*install, "-e", str(source)], check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"}
    )
    found = subprocess.run(
        [python, "-c", "import harness; print(harness.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert found.stdout.strip() == str(source / "harness" / "__init__.py"), found.stderr
    # No --ignore-missing-imports: a harness that mypy cannot find is an error of its own.
    checked = mypy_strict(tour["loss_spikes.py"].parent, "loss_spikes.py", python, {})
    assert checked.returncode == 0, checked.stdout


def site_packages() -> list[str]:
    import site

    return [path for path in site.getsitepackages() if Path(path).is_dir()]


def install_fake_distribution(site: Path, entry_points: str) -> None:
    """A distribution as pip leaves one: its metadata and its entry points, found on sys.path."""
    info = site / "spike_tools-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spike-tools\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_an_installed_entry_point_is_enabled_only_when_named(
    tour: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.settings import load_settings

    install_fake_distribution(
        tour["loss_spikes.py"].parent, "[harness.subscribers]\nspikes = loss_spikes:SPEC\n"
    )
    assert "loss_spikes" not in load_settings(None).subscribers, "installed is not enabled"
    settings = load_settings(None, ["run.plugins=['spikes']", "subscribers.loss_spikes.factor=4"])
    assert settings.subscribers["loss_spikes"].factor == 4.0
    with pytest.raises(SettingsError, match=r"'spiks' is neither .* entry point; did you mean 'spikes'\?"):
        load_settings(None, ["run.plugins=['spiks']"])
