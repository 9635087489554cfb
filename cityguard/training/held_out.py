"""Site footage checked against the held-out evaluation sources before a model trains or is gated on it.

The held-out note (shared/reference/held-out-sources.md) lists the sha256 of media kept for measuring cityguard; the
same bytes may sit anywhere, so every clip and image file a dataset is built from or a gate scores on is hashed and
refused when its digest is listed, as a dev-set build refuses one (cityguard.evaluation.devset). A machine without
the note has nothing to check against: the commands say the check is off.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from cityguard.evaluation.devset import held_out_digests, held_out_notes, unchecked_warning


def file_sha256(path: Path) -> str:
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def refuse_held_out(paths: Iterable[Path], notes: list[Path]) -> None:
    """Raises ValueError naming the first file whose sha256 a note lists (nothing to check without a note)."""
    digests = held_out_digests(notes)
    for path in dict.fromkeys(paths) if digests else ():
        if file_sha256(path) in digests:
            raise ValueError(f"refused: {path} has a held-out sha256 (listed in {' or '.join(map(str, notes))}): "
                             "held-out evaluation media must not train or gate a model")


def check_held_out(paths: Iterable[Path], given: Path | None) -> str | None:
    """Refuses held-out media among `paths` (`given`: the --held-out note, else the default ones); returns the
    warning to give when there is no note, so the check is off."""
    notes = held_out_notes(given)
    refuse_held_out(paths, notes)
    return None if notes else unchecked_warning()
