"""Data as users have it: odd image modes, odd names, hidden and broken files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.errors import DataError
from harness.core.preprocessing import Preprocessing
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
    found = {path for path, _ in (*info.train, *info.val)}
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
    assert all("val" in path.parts for path, _ in info.val)


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
    assert result.summary["status"] == "completed"
    assert result.summary["skipped_images"] == [str(broken)]
    assert (result.run_dir / "confusion_matrix" / "latest.png").is_file()


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
