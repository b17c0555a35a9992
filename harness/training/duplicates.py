"""The fit-start duplicate check: the same decoded pixels in two splits (leakage) or two classes.

`harness.training.data.scan` has the pixel digest of every readable file from its cached
check (`harness.io.images.examine`); `duplicate_warning` groups the split samples by
digest and says, in one line, which groups leak across splits or conflict across classes.
The rest of the audit (near duplicates, repeats within a class, label errors) is
``harness audit``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["duplicate_warning"]

_SHOWN = 5
"""Groups named in the warning; the others are counted."""
_MEMBERS = 3
"""Files named per group; the others are counted."""


def duplicate_warning(
    root: Path,
    splits: Mapping[str, Sequence[tuple[str, int]]],
    classes: Sequence[str],
    digests: Mapping[str, str],
) -> str | None:
    """One line naming the leaked and conflicting duplicates among `splits`' samples, or None.

    `splits` maps a split name to its ``(path, class index)`` samples; `digests` maps a
    path to its pixel digest, for the files whose digest is shared
    (`harness.training.scan_cache.Checked.shared`; any other path is left out).
    """
    if not digests:
        return None
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for split, samples in splits.items():
        for path, target in samples:
            digest = digests.get(path)
            if digest is not None:
                groups.setdefault(digest, []).append((split, classes[target], path))
    leaked = conflicting = flagged = 0
    named: list[str] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        leaks = len({split for split, _, _ in members}) > 1
        conflicts = len({label for _, label, _ in members}) > 1
        if not (leaks or conflicts):
            continue
        flagged += 1
        leaked += leaks
        conflicting += conflicts
        if len(named) < _SHOWN:
            shown = " = ".join(
                f"{_relative(path, root)} ({split}, {label})" for split, label, path in members[:_MEMBERS]
            )
            more = f" (+{len(members) - _MEMBERS} more)" if len(members) > _MEMBERS else ""
            named.append(shown + more)
    if not named:
        return None
    rest = f"; and {flagged - len(named)} more group(s)" if flagged > len(named) else ""
    return (
        f"[data].root = {str(root)!r}: the same decoded image in two splits ({leaked} group(s): "
        f"the validation score is inflated) or under two classes ({conflicting} group(s)): "
        f"{'; '.join(named)}{rest}. `harness audit {root}` lists them all with near duplicates "
        "([data].check_duplicates = false turns this check off)"
    )


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path
