"""Dataset statistics arithmetic: images per class, imbalance, image sizes from file headers, warnings.

Sizes are upright, as training sees them: ``harness.io.images.load_rgb`` applies the EXIF
orientation, so a 40x20 photo tagged with a quarter turn (orientations 5 to 8) is 20x40.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from PIL import ExifTags, Image, UnidentifiedImageError

from harness.core.context import DatasetInfo

__all__ = ["build_report", "image_sizes", "imbalance_ratio", "per_class"]

_COMMON_SIZES = 10
_LISTED_UNREADABLE = 10
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
"""EXIF orientations whose upright image swaps width and height."""


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The size of `image` after its EXIF orientation, from the header (no pixels decoded).

    A PNG's own ``getexif`` decodes the pixels to look for an ``eXIf`` chunk after them;
    the base reader takes the tags found before them, which is where writers put them.
    """
    exif = Image.Image.getexif(image) if image.format == "PNG" else image.getexif()
    width, height = image.size
    if exif.get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS:
        return height, width
    return width, height


def per_class(samples: Sequence[tuple[str, int]], num_classes: int) -> list[int]:
    """How many of `samples` (path, class index) pairs each class has."""
    counts = Counter(target for _, target in samples)
    return [counts.get(c, 0) for c in range(num_classes)]


def imbalance_ratio(counts: Sequence[int]) -> float | None:
    """Largest class over smallest; None when a class is empty (the ratio is unbounded)."""
    if not counts or min(counts) == 0:
        return None
    return max(counts) / min(counts)


def _spread(samples: Sequence[tuple[str, int]], limit: int) -> list[str]:
    """At most `limit` paths, taken from each class in turn so that small classes are seen too."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, target in samples:
        by_class[target].append(path)
    rounds = itertools.zip_longest(*by_class.values())
    return list(itertools.islice((path for paths in rounds for path in paths if path is not None), limit))


def image_sizes(samples: Sequence[tuple[str, int]], limit: int) -> dict[str, Any]:
    """Upright sizes and modes read from the headers of at most `limit` files (PIL reads no pixels here)."""
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    unreadable: list[str] = []
    chosen = _spread(samples, limit)
    for path in chosen:
        try:
            with Image.open(path) as image:
                sizes[_upright_size(image)] += 1
                modes[image.mode] += 1
        except (UnidentifiedImageError, OSError, ValueError) as error:
            unreadable.append(f"{path} ({type(error).__name__}: {error})")
    widths = [w for w, _ in sizes]
    heights = [h for _, h in sizes]
    return {
        "files": len(samples),
        "sampled": len(chosen),
        "read": sum(sizes.values()),
        "width": {"min": min(widths), "max": max(widths)} if sizes else None,
        "height": {"min": min(heights), "max": max(heights)} if sizes else None,
        "common_sizes": [
            {"width": w, "height": h, "count": n} for (w, h), n in sizes.most_common(_COMMON_SIZES)
        ],
        "modes": dict(modes.most_common()),
        "unreadable": unreadable,
    }


def build_report(
    data: DatasetInfo, class_names: Sequence[str], *, min_images: int, size_sample: int
) -> dict[str, Any]:
    """Everything `dataset_stats.json` holds, warnings included."""
    train = per_class(data.train, len(class_names))
    val = per_class(data.val, len(class_names))
    ratio = imbalance_ratio(train)
    # A streamed data set's samples are keys into its chunks, not files to open: no sizes.
    sampled = 0 if data.stream is not None else size_sample
    sizes = {
        "train": image_sizes(data.train, sampled),
        "val": image_sizes(data.val, sampled),
    }
    warnings = [
        f"class {name!r} has {n} training image(s), fewer than min_images = {min_images}"
        for name, n in zip(class_names, train, strict=True)
        if n < min_images
    ]
    warnings += [
        f"class {name!r} has no validation images" for name, n in zip(class_names, val, strict=True) if n == 0
    ]
    if data.skipped:
        warnings.append(f"{len(data.skipped)} unreadable file(s) were skipped; listed in dataset_stats.json")
    for split, stats in sizes.items():
        if stats["unreadable"]:
            count, first = len(stats["unreadable"]), stats["unreadable"][0]
            warnings.append(
                f"{count} of {stats['sampled']} sampled {split} images cannot be opened, e.g. {first}"
            )
            stats["unreadable"] = stats["unreadable"][:_LISTED_UNREADABLE]
    return {
        "root": data.stream or str(data.root),
        "classes": [
            {"index": c, "name": name, "train": train[c], "val": val[c]} for c, name in enumerate(class_names)
        ],
        "train_images": sum(train),
        "val_images": sum(val),
        "imbalance_ratio": ratio,
        "image_sizes": sizes,
        "skipped": [str(path) for path in data.skipped],
        "warnings": warnings,
    }
