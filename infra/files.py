"""Replacing a single file whole by write-then-rename (site configuration, calibration, the model registry's pointer,
ignore filters, the frame store's pictures), replacing a folder whole the same way (a dataset, a model export, a gate
report), making a copied tree durable, and taking turns with the other writers of a file."""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

# The permissions a new file gets from open(): read once, as reading the umask means setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def replace_file(path: Path, data: bytes | str, mode: int | None = None, durable: bool = True,
                 follow_link: bool = False) -> None:
    """Writes `data` (text as UTF-8) to a temporary file beside `path`, then renames it over `path`: a reader or a
    crash never meets half a file. When `durable`, the data reach the disk before the rename and the rename before
    the return, so a power cut leaves the old file or the new one, never an empty one. The file gets `mode`; without
    one, a file replaced keeps its permissions and a new one gets what open() would give. With `follow_link`, a link
    is followed: the file it names is replaced and the link stays (a site file linked from a configuration
    repository); without, the link is replaced, so that a link planted where the stages write (frames, hard
    negatives) cannot make them overwrite another file."""
    path = Path(path).resolve() if follow_link else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
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
    if durable:
        _sync_folder(path.parent)


def replace_tree(target: Path, write: Callable[[Path], object]) -> None:
    """Has `write` make the new `target`, a folder or a file, at the path it is given: one in a temporary folder
    beside `target`. Once that is on the disk (sync_tree), the one already at `target` is renamed aside, the new one
    renamed into place and the old one removed: a reader meets the old one or the new one, never a mix of their
    files, and an interruption leaves one of them whole (the old one, at worst, under its aside name, which
    restore_replaced puts back). When `write` fails, the old one stays as it was and nothing temporary is left."""
    target = Path(target)
    restore_replaced(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    aside = _aside_path(target)
    try:
        write(staging / target.name)
        sync_tree(staging / target.name)
        _remove(aside)  # left by a replacement that stopped after its swap
        if os.path.lexists(target):
            os.rename(target, aside)
        os.rename(staging / target.name, target)
        _sync_folder(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove(aside)


def replaceable_folder(folder: Path, entries: Collection[str], holding: str) -> Path:
    """The folder to give replace_tree for a folder holding `holding` (a dataset, a gate report), made of `entries`:
    resolved, so that a link to another disk stays and its target is replaced, and put back when a replacement
    stopped half way (restore_replaced). ValueError for a file and for a folder holding anything else, which the
    replacement would remove, and for a mount point, which cannot be renamed."""
    folder = Path(folder).resolve()
    if os.path.ismount(folder):
        raise ValueError(f"{folder} is a mount point, and {holding} is swapped in beside its folder: give a folder "
                         "inside it")
    restore_replaced(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file: give a folder for {holding}")
    foreign = sorted(path.name for path in folder.iterdir() if path.name not in entries) if folder.is_dir() else []
    if foreign:
        raise ValueError(f"{folder} holds more than {holding} ({', '.join(foreign[:3])}): give an empty folder or one "
                         f"holding only {holding}")
    return folder


def restore_replaced(target: Path) -> None:
    """Puts back the old `target` when replace_tree stopped between renaming it aside and renaming the new one in."""
    target, aside = Path(target), _aside_path(Path(target))
    if os.path.lexists(aside) and not os.path.lexists(target):
        os.rename(aside, target)


def _aside_path(target: Path) -> Path:
    return target.parent / f".{target.name}.previous"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `.<name>.lock` beside `path` while the block runs, so that writers which read, change
    and replace the file take turns, in this process and in any other. The lock file stays: one removed could be
    locked anew by a writer while another still holds the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def sync_tree(path: Path) -> None:
    """Makes a file, or a folder with everything in it, reach the disk, before a record that says it is complete
    does: a copy only written out by the system later would leave a power cut a complete-looking empty file."""
    path = Path(path)
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if entry.is_dir():
            _sync_folder(entry)
        else:
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable; best effort, as some systems cannot open or sync a folder (Windows,
    some network file systems), where the rename is as durable as they make it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
