"""harness audit: planted duplicates found and classified, a clean tree silent, label errors ranked high.

The duplicate tree is generated: smooth random 24 px images (6x6 noise, upscaled), with
planted exact copies (one a lossless BMP re-save), near copies (resized to 20 px and
re-encoded as JPEG at quality 75) and one image in two classes. The label-error test
flips 5% of the embedded digits' labels and takes out-of-sample probabilities from a
5-fold cross-validated logistic regression (sklearn), as a run's validation would give.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.audit import Entry, audit, find_label_issues, main

CLASSES = ("a", "b", "c")


def _smooth(rng: np.random.Generator) -> Image.Image:
    noise = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(noise).resize((24, 24), Image.Resampling.BILINEAR)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _clean_tree(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label in CLASSES:
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                _smooth(rng).save(root / split / label / f"{split}_{label}_{i}.png")
    return root


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, set[frozenset[str]], set[frozenset[str]]]:
    """A train/val tree with 3 exact leaks, 5 near copies and one image in two classes."""
    root = _clean_tree(tmp_path / "data", {"train": 8, "val": 3})
    exact: set[frozenset[str]] = set()
    for i, label in enumerate(CLASSES):
        source = root / "train" / label / f"train_{label}_{i}.png"
        copy = root / "val" / label / f"leak_{i}.png"
        shutil.copy(source, copy)
        exact.add(frozenset({source.name, copy.name}))
    resaved = root / "val" / "a" / "resaved.bmp"  # the same pixels, another file format
    Image.open(root / "train" / "a" / "train_a_5.png").save(resaved)
    exact.add(frozenset({"train_a_5.png", resaved.name}))
    conflict = root / "train" / "b" / "also_a.png"
    shutil.copy(root / "train" / "a" / "train_a_6.png", conflict)
    exact.add(frozenset({"train_a_6.png", conflict.name}))
    near: set[frozenset[str]] = set()
    for i in range(5):
        label, split = CLASSES[i % 3], ("val", "train")[i % 2]
        source = root / "train" / label / f"train_{label}_{7 - i % 2}.png" if i < 3 else None
        source = source or root / "val" / label / f"val_{label}_{i - 3}.png"
        copy = root / split / label / f"near_{i}.jpg"
        Image.open(source).convert("RGB").resize((20, 20), Image.Resampling.BILINEAR).save(copy, quality=75)
        near.add(frozenset({source.name, copy.name}))
    return root, exact, near


def test_planted_duplicates_are_found_and_classified(
    planted: tuple[Path, set[frozenset[str]], set[frozenset[str]]], tmp_path: Path
) -> None:
    root, exact, near = planted
    found = audit(root, output=tmp_path / "out")
    pairs = {frozenset({p.first.path.name, p.second.path.name}): p for p in found.pairs}
    assert exact <= {key for key, pair in pairs.items() if pair.match == "exact"}
    found_near = {key for key, pair in pairs.items() if pair.match == "near"} & near
    assert len(found_near) >= 0.8 * len(near)
    assert pairs[frozenset({"train_a_0.png", "leak_0.png"})].kind == "leakage"
    assert pairs[frozenset({"train_a_6.png", "also_a.png"})].kind == "conflicting"
    assert pairs[frozenset({"train_c_7.png", "near_2.jpg"})].kind == "leakage"
    assert pairs[frozenset({"train_b_6.png", "near_1.jpg"})].kind == "repeated"
    # Nothing else: every reported pair is a planted one.
    assert set(pairs) <= exact | near
    leaks = _rows(found.directory / "leakage.csv")
    assert {frozenset({Path(r["path"]).name, Path(r["other_path"]).name}) for r in leaks} == {
        key for key, pair in pairs.items() if pair.kind == "leakage"
    }
    page = (found.directory / "audit.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 * len(pairs)
    assert "<h2>conflicting: 1</h2>" in page


def test_the_command_line_fails_on_leakage_and_passes_without(
    planted: tuple[Path, set[frozenset[str]], set[frozenset[str]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _, _ = planted
    assert main([str(root), "--output", str(tmp_path / "one")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("audit: ") and "leakage " in line and "\n" not in line
    assert main([str(root), "--output", str(tmp_path / "two"), "--fail-on", "leakage"]) == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "audit.html",
        "conflicting.csv",
        "label.csv",
        "leakage.csv",
        "repeated.csv",
    ]


def test_a_clean_tree_is_silent(tmp_path: Path) -> None:
    root = _clean_tree(tmp_path / "data", {"train": 12, "val": 4, "test": 4}, seed=1)
    found = audit(root, output=tmp_path / "out")
    assert found.pairs == () and found.issues == ()
    assert main([str(root), "--output", str(tmp_path / "again"), "--fail-on", "any"]) == 0


@pytest.mark.slow
def test_the_embedded_digits_raise_no_false_alarm(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = tmp_path / "digits" / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    found = audit(tmp_path / "digits", output=tmp_path / "out")
    assert found.images == len(digits.images)
    assert found.pairs == ()


@pytest.mark.slow
def test_flipped_labels_rank_among_the_top_candidates(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    digits = load_digits()
    features, labels = digits.data[:600] / 16, digits.target[:600].copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), size=len(labels) // 20, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    probabilities = cross_val_predict(
        LogisticRegression(max_iter=300), features, labels, cv=5, method="predict_proba"
    )
    names = [str(k) for k in range(10)]
    images = [Entry(path=tmp_path / f"{i}.png", split="val", label=names[k]) for i, k in enumerate(labels)]
    issues = find_label_issues(images, probabilities, names)
    top = {int(issue.image.path.stem) for issue in issues[: 2 * len(flipped)]}
    assert len(top & set(flipped.tolist())) >= len(flipped) / 2
    assert [issue.rank for issue in issues] == list(range(1, len(issues) + 1))
    first = issues[0]
    assert first.suggested != first.given


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "no such directory"),
        (["{empty}"], "no images in class folders"),
        pytest.param(
            ["{tree}", "--run", "{empty}"], "not a run with a best checkpoint", marks=pytest.mark.slow
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    tree = _clean_tree(tmp_path / "tree", {"val": 1})
    paths = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "tree": str(tree)}
    out = tmp_path / "out"
    assert main([arg.format(**paths) for arg in argv] + ["--output", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not out.exists()


@pytest.mark.slow
def test_a_run_scores_its_validation_split_for_label_issues(tmp_path: Path) -> None:
    from harness.core.testing import write_imagefolder
    from harness.settings import load_settings
    from harness.training.fit import run
    from tests.conftest import SUBSCRIBER_NAMES

    data = tmp_path / "data"
    for seed, split in enumerate(("train", "val")):
        write_imagefolder(data / split, {"blue": 8, "green": 8, "red": 8}, size=16, seed=seed)
    red = data / "val" / "red"
    shutil.copy(red / sorted(p.name for p in red.iterdir())[0], data / "val" / "blue" / "red_in_blue.png")
    settings = load_settings(
        None,
        [
            f"data.root={str(data)!r}",
            "data.image_size=16",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "trainer.accelerator='cpu'",
            "trainer.devices=1",
            "trainer.num_sanity_val_steps=0",
            "trainer.progress_bar=false",
            f"run.output_dir={str(tmp_path / 'runs')!r}",
            *(f"subscribers.{name}.enabled=false" for name in SUBSCRIBER_NAMES),
        ],
    )
    result = run(settings)
    assert result.summary.status == "completed", result.summary.failures
    found = audit(data, run=result.run_dir)
    assert found.directory == result.run_dir / "audit"
    assert found.scored == 25  # the val/ images, the copy included; train/ is not out-of-sample
    assert found.count("conflicting") == 1
    rows = _rows(found.directory / "label.csv")
    assert all(row["split"] == "val" for row in rows)
    assert all({row["given"], row["suggested"]} <= {"blue", "green", "red"} for row in rows)


def test_the_help_starts_without_torch_lightning_or_the_audit_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from harness.cli import main\n"
        "try: main(['audit', '--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'imagehash', 'cleanlab') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert "--fail-on" in done.stdout
    assert done.stdout.strip().endswith("[]"), done.stdout + done.stderr
