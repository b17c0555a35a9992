"""Image files read the one way that training, export and prediction share (no torch).

Any still image becomes 8-bit RGB, upright: an EXIF orientation is applied (a phone's
portrait photo is stored sideways), grayscale and palette are expanded, alpha is
composited over white, and 16-bit or float images are scaled by their maximum. An image
larger than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89
megapixels) is unreadable like a corrupt one: named by path, never a traceback; so is
anything under an image's name that is not a regular file (a FIFO, a socket, a dangling
link), which is never opened (a FIFO would block the reader for ever).
`Preprocessing` says how such an image becomes a model input; `to_input` applies it with
numpy and Pillow (the prediction path), and `harness.training.data` applies the same with
torchvision (Pillow's bilinear resize of 8-bit images agrees with torchvision's
antialiased one within one grey level).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import operator
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from harness.core.errors import DataError
from harness.core.preprocessing import Preprocessing

__all__ = [
    "IMAGE_SUFFIXES",
    "examine",
    "find_images",
    "image_entries",
    "image_files",
    "decode_rgb",
    "is_image_file",
    "load_rgb",
    "pixel_digest",
    "to_input",
    "unreadable",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# What Pillow raises for a file it cannot read: a bomb is an error past twice the limit,
# a warning past the limit, which `_opened` turns into an error.
_UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

Array = npt.NDArray[np.float32]
_name = operator.attrgetter("name")


def is_image_file(path: Path) -> bool:
    """A visible name with an image suffix that is not a folder (a FIFO of that name counts, unreadable)."""
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
        and (path.exists() or path.is_symlink())
        and not path.is_dir()
    )


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder`, recursively and sorted, hidden files and folders left out.

    As `image_entries`, as `Path` objects.
    """
    return [Path(entry.path) for entry in image_entries(folder)]


def image_entries(folder: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """The image files under `folder` as `os.DirEntry` objects (a str path, a cached stat).

    Recursive, in `Path` order (each folder's names sorted, a subfolder's files at its
    name's place). A name starting with "." is left out, file or folder; a link to an
    image file counts, a link to a folder is followed like a folder (a link back to a
    folder the walk is inside is not: a loop's files count once), and a folder that may
    not be read (or is gone) is passed over. Anything else with an image suffix counts
    whatever its kind (a FIFO, a dangling link): the image check names it unreadable,
    rather than leaving it out unseen. One `os.scandir` and one `stat` per folder (its
    identity, against loops), and no `stat` of a regular file: its kind comes with the
    directory listing.
    """
    found: list[os.DirEntry[str]] = []
    _walk(os.fspath(folder), found, frozenset())
    return found


def _walk(folder: str, found: list[os.DirEntry[str]], inside: frozenset[tuple[int, int]]) -> None:
    try:
        here = Path(folder).stat()
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=_name)
    except (PermissionError, FileNotFoundError, NotADirectoryError):
        return
    inside = inside | {(here.st_dev, here.st_ino)}
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_dir():
            if entry.is_symlink() and _identity(entry.path) in inside:
                continue
            _walk(entry.path, found, inside)
        elif name[name.rfind(".") :].lower() in IMAGE_SUFFIXES:
            found.append(entry)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = Path(path).stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def find_images(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the image files under the folders named.

    A path that does not exist, or a folder without images, is a `DataError` naming it.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = image_files(path)
            if not inside:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise DataError(f"{path}: folder holds no image files (looked for {suffixes})")
            found.extend(inside)
        elif path.exists():  # a regular file, or a FIFO or device that `load_rgb` names unreadable
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return found


@contextlib.contextmanager
def _opened(path: str | Path) -> Iterator[Image.Image]:
    """`Image.open` with Pillow's decompression-bomb warning raised as an error.

    Anything but a regular file is refused before it is opened (`OSError`).
    """
    mode = Path(path).stat().st_mode
    if not stat.S_ISREG(mode):
        raise OSError(f"not a regular file but {_kind(mode)}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        yield image


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"))
    return next((name for test, name in kinds if test(mode)), "a block device or other special file")


def unreadable(path: str | Path) -> str | None:
    """Why `path` cannot be read as an image (``"Type: message"``), or None when it can.

    Checks the file's structure without decoding its pixels (`PIL.Image.Image.verify`).
    """
    try:
        with _opened(path) as image:
            image.verify()
    except _UNREADABLE as error:
        return f"{type(error).__name__}: {error}"
    return None


def load_rgb(path: str | Path) -> Image.Image:
    """Open any still image as upright 8-bit RGB; a `DataError` naming the path if it cannot be read."""
    try:
        return _load_rgb(path)
    except _UNREADABLE as error:
        raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def _load_rgb(path: str | Path) -> Image.Image:
    with _opened(path) as opened:
        return _upright_rgb(opened)


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """`load_rgb` for an image file's bytes (a streamed sample); a `DataError` naming `name`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
        with opened:
            return _upright_rgb(opened)
    except _UNREADABLE as error:
        raise DataError(f"{name}: not a readable image ({type(error).__name__}: {error})") from None


def _upright_rgb(opened: Image.Image) -> Image.Image:
    opened.load()
    image = opened
    if opened.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(opened)
    if image.mode in _HIGH_DEPTH_MODES:
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        return Image.fromarray((array * (255.0 / top)).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pixel_digest(image: Image.Image) -> str:
    """A hash of an image's decoded pixels and size (hex, 128 bits): equal for equal pixels.

    A lossless re-save in another format (PNG to BMP, grey PNG to RGB TIFF) keeps its
    digest when read by `load_rgb`; the training scan and `harness audit` both use it.
    """
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()[:32]


def examine(path: str | Path, *, decode: bool = True) -> tuple[str | None, str | None]:
    """``(why unreadable, pixel digest)`` of `path`, each None when there is none.

    The verdict is `unreadable`'s; then, with `decode`, the pixels are read as by
    `load_rgb` and hashed by `pixel_digest`. A file whose structure passes but whose
    pixels cannot be decoded (a truncated JPEG) is unreadable; without `decode` the
    digest is None and nothing is decoded.
    """
    reason = unreadable(path)
    if reason is not None or not decode:
        return reason, None
    try:
        return None, pixel_digest(_load_rgb(path))
    except _UNREADABLE as error:
        return f"{type(error).__name__}: {error}", None


def to_input(image: Image.Image, spec: Preprocessing) -> Array:
    """One RGB image as the model's input: CHW float32, resized (and cropped) and normalised."""
    size = spec.image_size
    resized = spec.resized_size(*image.size)
    if image.size != resized:
        image = image.resize(resized, Image.Resampling.BILINEAR)
    if resized != (size, size):
        left, top = spec.crop_box(*resized)
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    chw: Array = ((pixels - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw)
