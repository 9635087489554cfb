"""Replacing a single file whole by write-then-rename (site configuration, calibration, the model registry's pointer,
ignore filters, the frame store's pictures)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The permissions a new file gets from open(): read once, as reading the umask means setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def replace_file(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Writes `data` (text as UTF-8) to a temporary file beside `path`, then renames it over `path`: a reader or a
    crash never meets half a file. The file gets `mode`; without one, a file replaced keeps its permissions and a new
    one gets what open() would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
        if mode is None:
            try:
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK
        try:
            os.chmod(temporary, mode)
        except PermissionError:  # a file system without permission bits (vfat): the contents are what count
            pass
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
