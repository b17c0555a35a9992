"""Settings: every mistake ends before training with one message and exit code 2."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from harness.core.errors import SettingsError
from harness.core.testing import write_imagefolder
from harness.run import main
from harness.settings import Settings, load_settings, parse_override, settings_to_toml
from subscribers.ema import EMASettings


def test_defaults_need_no_file() -> None:
    settings = load_settings(None)
    assert attrs.evolve(settings, subscribers={}) == Settings()
    assert settings.data.root == ""
    assert settings.subscribers["ema"].enabled
    assert settings.subscribers["ema"] == EMASettings()


def test_resolved_settings_read_back_identically(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        [
            "data.batch_size=7",
            "subscribers.ema.decay=0.5",
            "run.plugins=['tests.plugins.fault_plugins:Fault']",
            'data.root="odd \\"quoted\\"\\nline\\ttab \\u0007 $\\\\x$"',
        ],
    )
    assert "\n" in settings.data.root and "\a" in settings.data.root
    path = tmp_path / "settings.toml"
    path.write_text(settings_to_toml(settings))
    assert load_settings(path) == settings


ODD_STRINGS = [
    "a\nb",
    "tab\there, return\r, bell\a, escape\x1b, nul\x00, delete\x7f, \x85 next line",
    "double \" quote, single ' quote, three \"\"\" and '''",
    "back\\slash, \\n not a newline, ends in a backslash\\",
    "unicode: Straße, 猫, 🐱, e\u0301 combining, \u202eright-to-left\u202c, \u2028 line separator",
    "p$\\bad$q, 100%, {braces}, [brackets], # not a comment, = not a key",
    "",
    " leading and trailing spaces ",
]


@pytest.mark.parametrize("text", ODD_STRINGS, ids=range(len(ODD_STRINGS)))
def test_odd_strings_round_trip_through_settings_toml(tmp_path: Path, text: str) -> None:
    defaults = load_settings(None)
    settings = attrs.evolve(
        defaults,
        run=attrs.evolve(defaults.run, output_dir=text),
        data=attrs.evolve(defaults.data, root=text),
        model=attrs.evolve(defaults.model, weights=text),
    )
    path = tmp_path / "settings.toml"
    path.write_text(settings_to_toml(settings), encoding="utf-8")

    assert load_settings(path) == settings


def test_the_shipped_settings_file_is_valid() -> None:
    load_settings(Path(__file__).parents[3] / "settings.toml")


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("data.batch_size=32", ("data", "batch_size"), 32),
        ("run.name=cats", ("run", "name"), "cats"),
        ("run.name='with = sign'", ("run", "name"), "with = sign"),
        ("subscribers.ema.enabled=false", ("subscribers", "ema", "enabled"), False),
    ],
)
def test_override_values_are_read_as_toml_or_else_as_strings(
    text: str, keys: tuple[str, ...], value: object
) -> None:
    assert parse_override(text) == (keys, value)


CASES = [
    # (file contents, --set overrides, the message expected on stderr)
    (
        "[data]\nbatchsize = 3\n",
        [],
        "settings.toml: unknown key 'data.batchsize'; did you mean 'batch_size'?",
    ),
    ("[dataa]\nroot = ''\n", [], "settings.toml: unknown table 'dataa'; did you mean 'data'?"),
    ('[data]\nbatch_size = "64"\n', [], "settings.toml: [data].batch_size must be an integer, got '64'"),
    (
        "[data]\nbalanced = true\n",  # the last release's key
        [],
        "unknown key 'data.balanced'; valid: root, image_size, batch_size, val_fraction, sampling",
    ),
    (
        '[data]\nsampling = "weighted"\n',
        [],
        "settings.toml: [data].sampling must be one of 'auto', 'shuffle', 'balanced', got 'weighted'",
    ),
    ("[augment]\nhflip = 1.5\n", [], 'settings.toml: [augment].hflip must be "preset" or in [0, 1], got 1.5'),
    ("[data]\nval_fraction = 1.5\n", [], "settings.toml: [data].val_fraction must be in (0, 1), got 1.5"),
    (
        "[subscribers.ema]\ndecay = 1.5\n",
        [],
        "settings.toml: [subscribers.ema].decay must be in (0, 1), got 1.5",
    ),
    (
        "[subscribers.emma]\nenabled = true\n",
        [],
        "settings.toml: unknown table 'subscribers.emma'; did you mean 'ema'?",
    ),
    (
        '[trainer]\nprecision = "fp8"\n',
        [],
        "settings.toml: [trainer].precision must be one of '32-true', '16-mixed', 'bf16-mixed'",
    ),
    ("[trainer]\ndevices = 0\n", [], '[trainer].devices must be a positive integer or "auto", got 0'),
    ("[data\n", [], "settings.toml: not valid TOML"),
    ("", ["data.batch_size"], "--set data.batch_size: expected section.key=value"),
    ("", ["data.batch_size=0"], "--set data.batch_size=0: [data].batch_size must be positive, got 0"),
    ("", ["model.lr=fast"], "--set model.lr=fast: [model].lr must be a number, got 'fast'"),
    (
        "",
        ["subscribers.ema=1"],
        "--set subscribers.ema=1: [subscribers.ema] must be a table, got 1",
    ),
    (
        "",
        ["model.arch='resnet19'"],
        "[model].arch: unknown torchvision architecture 'resnet19'; did you mean",
    ),
    ("", ["run.plugins=['nowhere.module:Thing']"], "[run].plugins: cannot import 'nowhere.module:Thing'"),
    ("", ["run.plugins=['pathlib:Path']"], "[run].plugins: 'pathlib:Path' has no connect(bus) method"),
    (
        "",
        ["run.plugins=['os:sep']"],
        "[run].plugins: 'os:sep' is not a SubscriberSpec nor a subscriber class",
    ),
    (
        "",
        ["run.plugins=['subscribers.plots:SPEC']"],
        "[run].plugins: 'subscribers.plots:SPEC' and a built-in subscriber both claim the name 'plots'",
    ),
    ("", ["run.plugins=['no_such_entry_point']"], "is neither 'package.module:NAME' nor an installed"),
    ("", ["model.weight_decay=inf"], "[model].weight_decay must be a finite number, got inf"),
    ("[model]\nwarmup = nan\n", [], "settings.toml: [model].warmup must be a finite number, got nan"),
    ("", ["augment.crop_ratio=[0.5, inf]"], "[augment].crop_ratio must hold finite numbers, got [0.5, inf]"),
    ("", ["subscribers.ema.warmup_power=-inf"], "[subscribers.ema].warmup_power must be a finite number"),
    ("", ["run.name='..'"], "[run].name must be one folder name of 1 to 128 printable characters"),
    ("", ["run.name='../escaped'"], "[run].name must be one folder name"),
    ("", ["run.name='/tmp/absolute'"], "[run].name must be one folder name"),
    ("", ["run.name='.'"], "[run].name must be one folder name"),
    ("", ["data.image_size=100000"], "[data].image_size must be in [8, 2048], got 100000"),
    ("", ["data.batch_size=1"], "[data].batch_size = 1: the network has BatchNorm2d layers"),
    (
        "[subscribers.loss_spikes]\nfactor = 2\n",
        [],
        "settings.toml: unknown table 'subscribers.loss_spikes'; a plugin's table needs the plugin named",
    ),
    ("", ["trainer.resume='last'"], "[trainer].resume = 'last': no run under"),
    ("", ["trainer.resume='missing.ckpt'"], "[trainer].resume: no such checkpoint file 'missing.ckpt'"),
]


@pytest.mark.parametrize(("text", "overrides", "message"), CASES, ids=[c[2][:48] for c in CASES])
def test_bad_settings_stop_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, overrides: list[str], message: str
) -> None:
    data = write_imagefolder(tmp_path / "data", {"a": 3, "b": 3}, size=8)
    path = tmp_path / "settings.toml"
    path.write_text(
        f"[run]\noutput_dir = '{tmp_path / 'runs'}'\n"
        + text.replace("[data]\n", f"[data]\nroot = '{data}'\n")
    )
    argv = [str(path), "--set", f"data.root='{data}'"] if "[data]" not in text else [str(path)]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, "one message, one line"
    assert not list((tmp_path / "runs").glob("*/version_*")), "nothing was started"
    assert not list(tmp_path.glob("**/version_*")), "no run directory anywhere (run.name = '..')"


def test_a_huge_value_is_cut_in_the_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "n" * 1_000_000
    settings = tmp_path / "settings.toml"
    settings.write_text(f"[run]\noutput_dir = '{tmp_path / 'runs'}'\nname = '{name}'\n")
    before = settings.read_bytes()
    assert main([str(settings), "--set", f"model.arch='{name}'"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "[run].name must be one folder name" in err and "(1000002 characters)" in err
    assert len(err) < 500
    assert settings.read_bytes() == before
    assert not (tmp_path / "runs").exists()


def make_tree(root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "nowhere"
    root.mkdir()
    if kind == "no_classes":
        (root / "readme.txt").write_text("no folders here")
    elif kind == "empty_class":
        write_imagefolder(root, {"cat": 3})
        (root / "dog").mkdir()
        (root / "dog" / "notes.txt").write_text("not an image")
    elif kind == "single_class":
        write_imagefolder(root, {"cat": 3})
    elif kind == "corrupt":
        write_imagefolder(root, {"cat": 3, "dog": 3})
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return root


DATA_CASES = [
    ("missing", "no such directory"),
    ("no_classes", "no class folders found (expected one folder of images per class)"),
    ("empty_class", "class folder"),
    ("single_class", "only one class ('cat'); a classifier needs at least two"),
    ("corrupt", "1 unreadable image file(s):"),
]


@pytest.mark.parametrize(("kind", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_stops_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    root = make_tree(tmp_path / "data", kind)
    assert main(["--set", f"data.root='{root}'", "--set", f"run.output_dir='{tmp_path / 'runs'}'"]) == 2
    err = capsys.readouterr().err
    assert f"[data].root = '{root}'" in err
    assert message in err
    if kind == "empty_class":
        assert str(root / "dog") in err and "holds no images" in err
    if kind == "corrupt":
        assert str(root / "dog" / "broken.png") in err and 'on_corrupt = "skip"' in err
    assert not (tmp_path / "runs").exists()


def test_settings_error_is_a_harness_error() -> None:
    with pytest.raises(SettingsError, match=r"--set nope.x=1: unknown table 'nope'; valid: run, data, model"):
        load_settings(None, ["nope.x=1"])


def test_the_readme_settings_reference_is_generated_from_the_code() -> None:
    from harness.settings.reference import event_reference_markdown, reference_markdown

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert event_reference_markdown() in readme, "paste `python -m harness.settings.reference` into README.md"
    assert reference_markdown() in readme, (
        "run `python -m harness.settings.reference` and paste it into README.md"
    )
    assert "|  |" not in reference_markdown(), "every option has a one-line help"
