"""Audit a data set: ``python -m harness.audit DATA [--run RUN_DIR] [--output DIR] [--fail-on KIND]``.

DATA is an ImageFolder tree, split (``train/``, ``val/``, ``test/``, the names training
accepts) or not. Every image is decoded once and compared with every other:

- exact duplicates: the same decoded pixels (`harness.io.images.pixel_digest` of the RGB
  array and its size, so a lossless re-save in another format is the same image; training's
  data scan warns about the leaked and conflicting ones with the same digest);
- near duplicates (resized, re-encoded copies): pairs whose perceptual hashes
  (`imagehash.phash`) are close, confirmed when their 16x16 grey thumbnails, less their
  means, differ by at most ``--tolerance`` grey levels (root mean square, default 8: a
  resized JPEG re-save of a 24 px image is within 8, two different handwritten digits
  of the embedded set are at least 10 apart).

Each pair is one kind: ``leakage`` (the two are in different splits: the validation or
test score is inflated), ``conflicting`` (one split, two classes: a conflicting label)
or ``repeated`` (twice in one split and class). With ``--run``, the run's best checkpoint
scores DATA's ``val/`` split (images it never trained on) and cleanlab's confident
learning (`cleanlab.filter.find_label_issues`) ranks the likely ``label`` errors, each
with its given and suggested class.

The output folder (default ``<RUN_DIR>/audit``, else ``audit`` in the working
directory; never overwriting an earlier one) holds ``audit.html`` (thumbnails side by
side, grouped by kind) and one CSV per kind. One summary line is printed. Exit codes: 0
done, 1 a kind named by ``--fail-on`` was found (or another harness error), 2 bad input
(the message names the path or the value); on bad input nothing is written.
Needs the ``audit`` extra (imagehash, cleanlab).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import sys
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Literal

import attrs
import numpy as np
import numpy.typing as npt
from PIL import Image

from harness.core.errors import DataError, HarnessError, report
from harness.core.layout import RunLayout
from harness.evaluation.folder import evaluation_dir
from harness.io.image_tree import SPLIT_NAMES, class_folders, split_of
from harness.io.images import image_files, load_rgb, pixel_digest

__all__ = [
    "KINDS",
    "Audit",
    "Entry",
    "LabelIssue",
    "Pair",
    "audit",
    "find_duplicates",
    "find_label_issues",
    "main",
    "scan_tree",
]

Kind = Literal["leakage", "conflicting", "repeated", "label"]
KINDS: tuple[Kind, ...] = ("leakage", "conflicting", "repeated", "label")
"""Every kind of finding, in the order of the page; ``--fail-on`` takes one (or ``any``)."""

_THUMB = 64
_SIDE = 16
_CANDIDATE_BITS = 16
"""Perceptual hashes at most this many bits apart are compared pixel by pixel (a loose filter)."""


@attrs.frozen(kw_only=True)
class Entry:
    """One image of the tree: where it is, its split (``""`` in an unsplit tree) and class."""

    path: Path
    split: str
    label: str


@attrs.frozen(kw_only=True)
class Pair:
    """Two images that are the same (``exact``) or nearly (``near``, `difference` grey levels apart)."""

    kind: Kind
    match: Literal["exact", "near"]
    difference: float
    first: Entry
    second: Entry


@attrs.frozen(kw_only=True)
class LabelIssue:
    """A likely label error: `rank` from 1 (most likely), the given and the suggested class."""

    rank: int
    image: Entry
    given: str
    suggested: str
    confidence: float


@attrs.frozen(kw_only=True)
class Audit:
    """What the audit found among `images` (`scored` of them with a model's probabilities); where it wrote."""

    images: int
    scored: int
    pairs: tuple[Pair, ...]
    issues: tuple[LabelIssue, ...]
    directory: Path

    def count(self, kind: str) -> int:
        if kind == "label":
            return len(self.issues)
        return sum(pair.kind == kind for pair in self.pairs)

    def summary(self) -> str:
        exact = sum(pair.match == "exact" for pair in self.pairs)
        counts = ", ".join(f"{kind} {self.count(kind)}" for kind in KINDS)
        return (
            f"audit: {self.images} images; {exact} exact and {len(self.pairs) - exact} near duplicate pairs; "
            f"{counts} (of {self.scored} scored by a model) -> {self.directory}"
        )


def scan_tree(data: Path) -> list[Entry]:
    """Every image of `data` with its split and class; a `DataError` naming the folder when none."""
    if not data.is_dir():
        raise DataError(f"DATA {str(data)!r}: no such directory")
    order = list(SPLIT_NAMES)
    splits = [(split, folder) for folder in class_folders(data) if (split := split_of(folder))]
    roots = sorted(splits, key=lambda found: order.index(found[0]))
    images = [
        Entry(path=path, split=split, label=label.name)
        for split, root in (roots or [("", data)])
        for label in class_folders(root)
        for path in image_files(label)
    ]
    if not images:
        raise DataError(f"DATA {str(data)!r}: no images in class folders (expected <class>/<image> files)")
    return images


def _kind(first: Entry, second: Entry) -> Kind:
    if first.split != second.split:
        return "leakage"
    return "conflicting" if first.label != second.label else "repeated"


def _signature(rgb: Image.Image) -> npt.NDArray[np.float32]:
    grey = rgb.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX)
    values = np.asarray(grey, dtype=np.float32).reshape(-1)
    centred: npt.NDArray[np.float32] = values - values.mean()
    return centred


def find_duplicates(images: Sequence[Entry], *, tolerance: float = 8.0) -> list[Pair]:
    """The exact and near duplicate pairs among `images` (see the module), exact ones first."""
    import imagehash

    digests: list[str] = []
    bits = np.zeros((len(images), 64), dtype=bool)
    signatures = np.zeros((len(images), _SIDE * _SIDE), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = load_rgb(image.path)
        digests.append(pixel_digest(rgb))
        bits[i] = imagehash.phash(rgb).hash.reshape(-1)
        signatures[i] = _signature(rgb)
    pairs: list[Pair] = []
    groups: dict[str, list[int]] = {}
    for i, digest in enumerate(digests):
        groups.setdefault(digest, []).append(i)
    for members in groups.values():
        for a, b in combinations(members, 2):
            first, second = images[a], images[b]
            pairs.append(
                Pair(kind=_kind(first, second), match="exact", difference=0.0, first=first, second=second)
            )
    packed = np.packbits(bits, axis=1)
    for a in range(len(images) - 1):
        apart = np.unpackbits(packed[a] ^ packed[a + 1 :], axis=1).sum(axis=1)
        for b in (a + 1 + np.flatnonzero(apart <= _CANDIDATE_BITS)).tolist():
            difference = float(np.sqrt(np.mean((signatures[a] - signatures[b]) ** 2)))
            if digests[a] != digests[b] and difference <= tolerance:
                first, second = images[a], images[b]
                pairs.append(
                    Pair(
                        kind=_kind(first, second),
                        match="near",
                        difference=difference,
                        first=first,
                        second=second,
                    )
                )
    return pairs


def find_label_issues(
    images: Sequence[Entry], probabilities: npt.NDArray[np.float64], class_names: Sequence[str]
) -> list[LabelIssue]:
    """cleanlab's likely label errors among `images`, ranked, from out-of-sample `probabilities` (N x C)."""
    from cleanlab.filter import find_label_issues as confident_learning  # type: ignore[import-untyped]

    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[image.label] for image in images])
    ranked = confident_learning(labels, probabilities, return_indices_ranked_by="self_confidence")
    return [
        LabelIssue(
            rank=rank,
            image=images[i],
            given=images[i].label,
            suggested=class_names[int(np.argmax(probabilities[i]))],
            confidence=float(probabilities[i, labels[i]]),
        )
        for rank, i in enumerate(ranked, start=1)
    ]


def _run_probabilities(
    run: Path, images: Sequence[Entry]
) -> tuple[list[Entry], npt.NDArray[np.float64], tuple[str, ...]]:
    """The run's best checkpoint scored on the tree's ``val`` images: (images, probabilities, classes)."""
    import tempfile

    from harness.evaluate import resolve_source
    from harness.evaluation.data import EvaluationData
    from harness.training.evaluation import load_checkpoint, test_model

    _, checkpoint = resolve_source(run)
    loaded = load_checkpoint(checkpoint)
    names = loaded.class_names
    val = [image for image in images if image.split == "val"]
    if not val:
        raise DataError(
            f"--run {str(run)!r}: DATA has no val/ split to score (the run's out-of-sample images)"
        )
    strangers = sorted({image.label for image in val} - set(names))
    if strangers:
        raise DataError(
            f"--run {str(run)!r}: val/ class folder(s) {', '.join(strangers)} not in the run's label map"
        )
    index = {name: i for i, name in enumerate(names)}
    data = EvaluationData(
        folder=val[0].path.parent.parent, split="val", samples=tuple((i.path, index[i.label]) for i in val)
    )
    with tempfile.TemporaryDirectory() as scratch:
        logits = test_model(loaded, data, Path(scratch)).astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return val, shifted / shifted.sum(axis=1, keepdims=True), names


def _thumbnail(path: Path) -> str:
    image = load_rgb(path)
    image.thumbnail(
        (_THUMB, _THUMB), Image.Resampling.NEAREST if max(image.size) < _THUMB else Image.Resampling.BILINEAR
    )
    if max(image.size) < _THUMB:
        scale = _THUMB / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.NEAREST,
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(image: Entry, caption: str) -> str:
    where = html.escape(f"{image.split + '/' if image.split else ''}{image.label}")
    return (
        f'<figure><img src="{_thumbnail(image.path)}" alt=""><figcaption>{where}<br>'
        f"<small>{html.escape(image.path.name)}</small>{caption}</figcaption></figure>"
    )


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>audit of {data}</title><style>
body{{font-family:sans-serif;margin:1.5em}} .row{{display:flex;gap:.5em;align-items:center;margin:.4em 0}}
figure{{margin:0;text-align:center;font-size:.8em}} img{{image-rendering:pixelated;border:1px solid #ccc}}
</style></head><body><h1>Audit of {data}</h1><p>{summary}</p>{sections}</body></html>
"""


def _page(data: Path, found: Audit, limit: int) -> str:
    sections = []
    for kind in KINDS:
        rows = []
        if kind == "label":
            for issue in found.issues[:limit]:
                note = f"<br>given {html.escape(issue.given)}, suggested {html.escape(issue.suggested)}"
                rows.append(f'<div class="row">#{issue.rank} {_figure(issue.image, note)}</div>')
        else:
            for pair in (p for p in found.pairs if p.kind == kind):
                if len(rows) == limit:
                    break
                note = f"<br>{pair.match}" + (
                    f" ({pair.difference:.1f} grey levels)" if pair.match == "near" else ""
                )
                rows.append(f'<div class="row">{_figure(pair.first, "")}{_figure(pair.second, note)}</div>')
        shown = f" (first {limit})" if found.count(kind) > limit else ""
        sections.append(f"<h2>{kind}: {found.count(kind)}{shown}</h2>" + "".join(rows))
    return _PAGE.format(
        data=html.escape(str(data)), summary=html.escape(found.summary()), sections="".join(sections)
    )


def _write(directory: Path, data: Path, found: Audit, limit: int) -> None:
    directory.mkdir(parents=True)
    header = ["match", "difference", "path", "split", "class", "other_path", "other_split", "other_class"]
    for kind in KINDS[:3]:
        with (directory / f"{kind}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(header)
            for p in (p for p in found.pairs if p.kind == kind):
                a, b = p.first, p.second
                writer.writerow(
                    [p.match, f"{p.difference:.2f}", a.path, a.split, a.label, b.path, b.split, b.label]
                )
    with (directory / "label.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["rank", "path", "split", "given", "suggested", "given_probability"])
        for issue in found.issues:
            i = issue.image
            writer.writerow(
                [issue.rank, i.path, i.split, issue.given, issue.suggested, f"{issue.confidence:.4f}"]
            )
    (directory / "audit.html").write_text(_page(data, found, limit), encoding="utf-8")


def audit(
    data: Path,
    *,
    run: Path | None = None,
    output: Path | None = None,
    tolerance: float = 8.0,
    page_limit: int = 200,
    probabilities: tuple[Sequence[Entry], npt.NDArray[np.float64], Sequence[str]] | None = None,
) -> Audit:
    """Audit `data` and write the output folder (see the module).

    `probabilities` (images, N x C out-of-sample probabilities, class names) stand in for
    ``--run``'s when given: any model's held-out predictions can be audited.
    """
    images = scan_tree(data)
    if run is not None and probabilities is None:
        probabilities = _run_probabilities(run, images)
    pairs = find_duplicates(images, tolerance=tolerance)
    issues = find_label_issues(*probabilities) if probabilities is not None else []
    default = RunLayout(run).audit if run is not None else Path("audit")
    found = Audit(
        images=len(images),
        scored=len(probabilities[0]) if probabilities is not None else 0,
        pairs=tuple(pairs),
        issues=tuple(issues),
        directory=evaluation_dir(output or default),
    )
    _write(found.directory, data, found, page_limit)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.audit",
        description="Find duplicated, leaked and conflicting images and (with --run) likely label errors.",
        epilog="Exit codes: 0 done, 1 a --fail-on kind was found, 2 bad input (the message names it).",
    )
    parser.add_argument("data", type=Path, help="an ImageFolder tree (train/ val/ test/ splits or not)")
    parser.add_argument(
        "--run", type=Path, help="a run directory: its best checkpoint scores DATA's val/ split"
    )
    parser.add_argument(
        "--output", type=Path, metavar="DIR", help="the output folder (default <RUN>/audit, else ./audit)"
    )
    parser.add_argument(
        "--fail-on", choices=(*KINDS, "any"), action="append", default=[], help="exit 1 when found"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=8.0,
        help="most grey levels (RMS) apart for a near duplicate (default 8)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.tolerance <= 255:
        parser.error(f"--tolerance must be in 0..255 grey levels, got {args.tolerance}")
    try:
        found = audit(args.data, run=args.run, output=args.output, tolerance=args.tolerance)
    except HarnessError as error:
        return report(error)
    print(found.summary())
    failing = KINDS if "any" in args.fail_on else args.fail_on
    return 1 if any(found.count(kind) for kind in failing) else 0


if __name__ == "__main__":
    sys.exit(main())
