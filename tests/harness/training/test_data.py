"""Data as users have it: odd image modes, odd names, hidden and broken files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.context import LeftOutClass
from harness.core.errors import DataError
from harness.core.preprocessing import Preprocessing
from harness.io.images import image_entries, image_files
from harness.settings import DataSettings
from harness.training.data import ImageFiles, materialise_digits, scan


def messy_tree(root: Path) -> dict[str, Path]:
    """Two classes with spaces and non-ASCII letters, every kind of file a real folder has."""
    cats, dogs = root / "chat tigré", root / "Hund groß"
    cats.mkdir(parents=True)
    dogs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {
        "rgb": cats / "rgb.png",
        "gray": cats / "gray.png",
        "palette": cats / "palette.gif",
        "rgba": cats / "rgba.png",
        "sixteen": dogs / "sixteen.png",
        "tiny": dogs / "tiny.png",
        "large": dogs / "large.jpg",
        "jpeg": dogs / "photo.JPEG",
    }
    Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(files["rgb"])
    Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8), mode="L").save(files["gray"])
    Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).convert("P").save(files["palette"])
    Image.fromarray(rng.integers(0, 255, (10, 10, 4), dtype=np.uint8), mode="RGBA").save(files["rgba"])
    Image.fromarray(rng.integers(0, 65535, (10, 10), dtype=np.uint16)).save(files["sixteen"])
    Image.fromarray(np.full((1, 1, 3), 128, dtype=np.uint8)).save(files["tiny"])
    Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(files["large"])
    Image.fromarray(rng.integers(0, 255, (12, 9, 3), dtype=np.uint8)).save(files["jpeg"], format="JPEG")
    (cats / ".hidden.png").write_bytes(b"not even an image")
    (dogs / "notes.txt").write_text("a text file beside the images")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    return files


def test_every_image_mode_and_size_loads_as_rgb_of_one_size(tmp_path: Path) -> None:
    files = messy_tree(tmp_path / "data")
    info, classes = scan(DataSettings(root=str(tmp_path / "data"), val_fraction=0.25), seed=0)
    assert classes == ("Hund groß", "chat tigré")
    found = {Path(path) for path, _ in (*info.train, *info.val)}
    assert found == set(files.values()), "hidden files and non-images are left out"
    dataset = ImageFiles([(path, 0) for path in files.values()], Preprocessing(image_size=16))
    for index in range(len(dataset)):
        image, _ = dataset[index]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert torch.isfinite(image).all()
    sixteen = ImageFiles([(files["sixteen"], 0)], Preprocessing(image_size=16, mean=(0, 0, 0), std=(1, 1, 1)))
    assert float(sixteen[0][0].max()) > 0.9, "16-bit images are scaled, not clipped to white"


def test_corrupt_files_stop_by_default_naming_each_path(tmp_path: Path) -> None:
    messy_tree(tmp_path / "data")
    broken = tmp_path / "data" / "chat tigré" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    lying = tmp_path / "data" / "Hund groß" / "lying.jpg"
    lying.write_text("I am text pretending to be a JPEG")
    with pytest.raises(DataError) as caught:
        scan(DataSettings(root=str(tmp_path / "data")), seed=0)
    message = str(caught.value)
    assert "2 unreadable image file(s)" in message
    assert str(broken) in message and str(lying) in message
    assert 'on_corrupt = "skip"' in message


def test_corrupt_files_can_be_skipped_and_are_counted(tmp_path: Path) -> None:
    files = messy_tree(tmp_path / "data")
    broken = tmp_path / "data" / "chat tigré" / "broken.png"
    broken.write_bytes(b"garbage")
    info, _ = scan(DataSettings(root=str(tmp_path / "data"), on_corrupt="skip", val_fraction=0.25), seed=0)
    assert info.skipped == (broken,)
    assert len(info.train) + len(info.val) == len(files)


def test_a_train_val_tree_is_used_as_split(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("val", 2)):
        for name in ("a", "b"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                Image.new("RGB", (6, 6)).save(folder / f"{n}.png")
    info, classes = scan(DataSettings(root=str(tmp_path)), seed=0)
    assert classes == ("a", "b")
    assert (len(info.train), len(info.val)) == (8, 4)
    assert all("val" in Path(path).parts for path, _ in info.val)


def test_the_stratified_split_is_seeded_and_keeps_every_class(tmp_path: Path) -> None:
    from harness.core.testing import write_imagefolder

    write_imagefolder(tmp_path, {"a": 10, "b": 3, "c": 2}, size=4)
    settings = DataSettings(root=str(tmp_path), val_fraction=0.2)
    first, _ = scan(settings, seed=1)
    again, _ = scan(settings, seed=1)
    other, _ = scan(settings, seed=2)
    assert first == again
    assert first.val != other.val
    assert sorted({target for _, target in first.val}) == [0, 1, 2]
    assert sorted({target for _, target in first.train}) == [0, 1, 2]


def test_the_embedded_digits_are_written_once_as_an_imagefolder(tmp_path: Path) -> None:
    root = materialise_digits(tmp_path)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert sum(1 for _ in root.rglob("*.png")) == 1797
    stamp = (root / "0" / "digit_0000.png").stat().st_mtime_ns
    assert materialise_digits(tmp_path) == root
    assert (root / "0" / "digit_0000.png").stat().st_mtime_ns == stamp, "not written twice"
    with Image.open(root / "0" / "digit_0000.png") as image:
        assert image.size == (8, 8) and image.mode == "L"


@pytest.mark.slow
def test_a_run_on_messy_data_skips_the_broken_files_and_says_so(tmp_path: Path) -> None:
    from harness.settings import load_settings
    from harness.training.fit import run

    messy_tree(tmp_path / "data")
    for n in range(3):
        Image.new("RGB", (5, 5), (n, 0, 0)).save(tmp_path / "data" / "Hund groß" / f"extra {n}.png")
    broken = tmp_path / "data" / "chat tigré" / "broken.png"
    broken.write_bytes(b"garbage")
    settings = load_settings(
        None,
        [
            f"data.root='{tmp_path / 'data'}'",
            "data.on_corrupt='skip'",
            "data.image_size=16",
            "data.batch_size=4",
            "data.val_fraction=0.3",
            "trainer.max_epochs=1",
            "trainer.accelerator='cpu'",
            "trainer.progress_bar=false",
            f"run.output_dir='{tmp_path / 'runs'}'",
            "subscribers.onnx_export.enabled=false",
        ],
    )
    result = run(settings)
    assert result.summary.status == "completed"
    assert result.summary.skipped_images == (str(broken),)
    assert (result.run_dir / "confusion_matrix" / "latest.png").is_file()


# Data as users have it (issue 14): split folders, unknown classes, decompression bombs, EXIF.


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file under `root` with its bytes: what must be unchanged after a refused run."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def refused_run(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    """`python -m harness.run` on `data`: asserts exit 2, one line on stderr, nothing written or changed."""
    from harness.run import main

    before = snapshot(tmp_path)
    runs = tmp_path / "runs"
    argv = [f"data.root={str(data)!r}", f"run.output_dir={str(runs)!r}", "trainer.accelerator='cpu'"]
    code = main([item for override in (*argv, *overrides) for item in ("--set", override)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert snapshot(tmp_path) == before, "a refused run changes nothing"
    assert not runs.exists(), "a refused run makes no run directory"
    return lines[0]


def split_tree(root: Path, splits: dict[str, tuple[str, ...]], count: int = 2) -> Path:
    """`root/<split>/<class>/<n>.png` for each split and its classes."""
    for split, classes in splits.items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                Image.new("RGB", (6, 6), (40 * n, 0, 0)).save(folder / f"{n}.png")
    return root


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "Validation"])
def test_usual_split_folder_names_are_splits_not_classes(tmp_path: Path, val_name: str) -> None:
    root = split_tree(tmp_path / "data", {"train": ("a", "b"), val_name: ("a", "b"), "test": ("a", "b")})
    info, classes = scan(DataSettings(root=str(root)), seed=0)
    assert classes == ("a", "b")
    assert {Path(path).parts[-3] for path, _ in info.train} == {"train"}
    assert {Path(path).parts[-3] for path, _ in info.val} == {val_name}
    assert {Path(path).parts[-3] for path, _ in info.test} == {"test"}, "test/ is kept for evaluation"
    assert (len(info.train), len(info.val), len(info.test)) == (4, 4, 4)
    assert [target for _, target in info.test] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("splits", "says"),
    [
        ({"train": ("a", "b")}, "holds only split folders (train/) and no val split"),
        ({"train": ("a", "b"), "test": ("a", "b")}, "holds only split folders (test/, train/) and no val"),
        ({"validation": ("a", "b")}, "holds only split folders (validation/) and no train split"),
        ({"train": ("a", "b"), "val": ("a",), "valid": ("b",)}, "two val split folders, val/ and valid/"),
        (
            {"train": ("a", "b"), "val": ("a", "b"), "cats": ("x",)},
            "mixes split folders (train/, val/) with other",
        ),
    ],
    ids=["train-only", "train-test", "validation-only", "two-vals", "mixed"],
)
def test_a_tree_of_split_names_without_a_split_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], splits: dict[str, tuple[str, ...]], says: str
) -> None:
    root = split_tree(tmp_path / "data", splits)
    line = refused_run(tmp_path, root, capsys)
    assert f"error: [data].root = {str(root)!r}: {says}" in line


def test_validation_classes_missing_from_train_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = split_tree(tmp_path / "data", {"train": ("a", "b"), "val": ("a", "b", "c"), "test": ("a", "d")})
    line = refused_run(tmp_path, root, capsys)
    assert "class folders not in train/ (val/: 'c'; test/: 'd')" in line
    assert '[data].unknown_classes = "skip"' in line


def test_validation_classes_missing_from_train_can_be_left_out_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = split_tree(tmp_path / "data", {"train": ("a", "b"), "val": ("a", "b", "c"), "test": ("a", "d")})
    info, classes = scan(DataSettings(root=str(root), unknown_classes="skip"), seed=0)
    assert classes == ("a", "b")
    assert {Path(path).parent.name for path, _ in info.val} == {"a", "b"}
    assert {Path(path).parent.name for path, _ in info.test} == {"a"}
    assert "leaving out 4 image(s) of class folders not in train/" in caplog.text
    assert "val/: 'c'; test/: 'd'" in caplog.text
    assert info.left_out == (
        LeftOutClass(split="val", name="c", images=2),
        LeftOutClass(split="test", name="d", images=2),
    ), "summary.json lists them from here"


def bomb_png(path: Path, side: int) -> Path:
    """A valid black 1-bit PNG of `side` x `side` pixels (a few kB, written in well under a second)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte, then the packed pixels
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("side", "raised"),
    [(15000, "DecompressionBombError"), (10000, "DecompressionBombWarning")],
    ids=["past-twice-the-limit", "past-the-limit"],
)
def test_a_decompression_bomb_is_an_unreadable_image_named_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], side: int, raised: str
) -> None:
    from harness.core.testing import write_imagefolder
    from harness.io.images import load_rgb

    root = write_imagefolder(tmp_path / "data", {"a": 4, "b": 4}, size=6)
    bomb = bomb_png(root / "a" / "huge.png", side)
    with pytest.raises(DataError, match=f"huge.png: not a readable image \\({raised}"):
        load_rgb(bomb)

    line = refused_run(tmp_path, root, capsys)
    assert f"1 unreadable image file(s): {bomb} ({raised}: Image size ({side * side} pixels)" in line

    info, _ = scan(DataSettings(root=str(root), on_corrupt="skip"), seed=0)
    assert info.skipped == (bomb,)
    assert bomb not in {path for path, _ in (*info.train, *info.val)}


def exif_rotated_jpeg(path: Path) -> Path:
    """A JPEG stored 24 wide x 12 tall, left half red, right half blue, with EXIF orientation 6.

    Orientation 6 says: turn it 90 degrees clockwise to show it, so upright it is 12 wide x 24
    tall, red on top and blue below.
    """
    pixels = np.zeros((12, 24, 3), dtype=np.uint8)
    pixels[:, :12, 0] = 255
    pixels[:, 12:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif)
    return path


def test_an_exif_orientation_is_applied_when_training(tmp_path: Path) -> None:
    from harness.io.images import load_rgb

    path = exif_rotated_jpeg(tmp_path / "portrait.jpg")
    with Image.open(path) as stored:
        assert stored.size == (24, 12), "the file itself is stored sideways"
    upright = np.asarray(load_rgb(path), dtype=np.int32)
    assert upright.shape == (24, 12, 3)
    assert upright[:10, :, 0].min() > 200 and upright[:10, :, 2].max() < 60, "red on top"
    assert upright[14:, :, 2].min() > 200 and upright[14:, :, 0].max() < 60, "blue below"

    plain = Preprocessing(image_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    tensor, _ = ImageFiles([(path, 0)], plain)[0]
    assert float(tensor[0, :3].mean()) > 0.8 and float(tensor[2, :3].mean()) < 0.2, "training sees red on top"
    assert float(tensor[2, -3:].mean()) > 0.8 and float(tensor[0, -3:].mean()) < 0.2, "and blue below"


def test_num_workers_defaults_to_auto_the_cores_minus_one_at_most_eight() -> None:
    from harness.core.errors import SettingsError
    from harness.settings import load_settings
    from harness.training.data import loader_workers

    assert load_settings(None).data.num_workers == "auto"
    cores = len(os.sched_getaffinity(0))
    assert loader_workers("auto") == max(0, min(cores - 1, 8))
    assert loader_workers(3) == 3
    assert load_settings(None, overrides=["data.num_workers=2"]).data.num_workers == 2
    for bad in ("-1", '"many"'):
        with pytest.raises(SettingsError, match="num_workers"):
            load_settings(None, overrides=[f"data.num_workers={bad}"])


def test_the_listing_is_sorted_skips_hidden_names_and_follows_links_to_files_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for folder in ("a/.hidden", "a/sub.png", "b", "c/deep/er", ".git"):
        (root / folder).mkdir(parents=True)
    for name in (
        "a/x.PNG", "a/x.png", "a/.h.png", "a/.hidden/in.png", "a/sub.png/inner.jpg", "a/notes.txt",
        "a/z.", "a/png", "b/é.jpg", "b/sp ace.jpeg", "b/a-c.png", ".git/q.png", "c/deep/er/k.webp",
        "c/deep.png", "c/deep-x.png", "a/b.tif",
    ):  # fmt: skip
        (root / name).write_bytes(b"")
    (root / "a" / "link.jpg").symlink_to(root / "b" / "é.jpg")
    (root / "a" / "linked").symlink_to(root / "b", target_is_directory=True)
    (root / "a" / "broken.png").symlink_to(root / "nowhere.png")
    (root / "a" / "folder.png").symlink_to(root / "c", target_is_directory=True)
    os.mkfifo(root / "a" / "fifo.png")
    expected = [
        "a/b.tif", "a/link.jpg", "a/sub.png/inner.jpg", "a/x.PNG", "a/x.png", "b/a-c.png", "b/sp ace.jpeg",
        "b/é.jpg", "c/deep/er/k.webp", "c/deep-x.png", "c/deep.png",
    ]  # fmt: skip
    assert image_files(root) == [root / name for name in expected], "in Path order, as sorted(Path) gives"
    assert [entry.path for entry in image_entries(root)] == [str(root / name) for name in expected]
    assert image_files(root / "missing") == []
