"""Claim check for frames too large for one broker message: the JPEG goes to a frame store, the message carries
`Frame.frame_ref`, and the consumer resolves the reference. Stored frames expire.

`FrameStore` is the interface; `LocalFrameStore` (a directory shared by producer and consumers on one host or a
shared mount) is the default. An object-store backend only needs the same three methods.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from infra.files import replace_file
from schemas.base import ID_MAX_CHARS
from schemas.settings.config import Config

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"
# A camera id (at most ID_MAX_CHARS) and a sequence number (at most 20 digits, as a 64-bit one has): no reference can
# name a file the filesystem refuses.
LOCAL_REF = re.compile(rf"^local:([A-Za-z0-9][A-Za-z0-9_.-]{{0,{ID_MAX_CHARS - 1}}})/([0-9]{{1,20}})\.jpg$")


class FrameNotFound(LookupError):
    """The reference points at no stored frame: it expired, or it belongs to another store."""


class FrameStore(Protocol):
    def put(self, camera_id: str, seq: int, jpeg: bytes) -> str:
        """Stores the frame; returns the reference to send in Frame.frame_ref. Raises OSError when it cannot."""

    def resolve(self, frame_ref: str) -> bytes:
        """The JPEG bytes of a reference; raises FrameNotFound."""

    def expire(self) -> int:
        """Deletes frames older than the time to live; returns how many. Raises OSError if the store cannot be read."""


class LocalFrameStore:
    """One file per frame: <directory>/<camera_id>/<seq>.jpg, written atomically, expired by modification time."""

    def __init__(self, directory: Path, ttl_s: float, clock: Callable[[], float] = time.time):
        self.directory = directory
        self.ttl_s = ttl_s
        self.clock = clock

    def put(self, camera_id: str, seq: int, jpeg: bytes) -> str:
        folder = self.directory / camera_id
        folder.mkdir(parents=True, exist_ok=True)
        # Whole or not at all, so a consumer never reads half a file; the camera's pictures for its user alone. Not
        # synced to disk: a picture lives for minutes, a power cut loses the unsent messages that name it anyway, and
        # two syncs per frame would cost capture its rate.
        replace_file(folder / f"{seq}.jpg", jpeg, mode=0o600, durable=False)
        return f"{LOCAL_PREFIX}{camera_id}/{seq}.jpg"

    def resolve(self, frame_ref: str) -> bytes:
        match = LOCAL_REF.match(frame_ref)
        if match is None:  # also rejects '..' and absolute paths
            raise FrameNotFound(f"frame reference {frame_ref!r} is not a local frame-store reference")
        path = self.directory / match.group(1) / f"{match.group(2)}.jpg"
        try:
            if self.clock() - path.stat().st_mtime > self.ttl_s:
                raise FrameNotFound(f"frame {frame_ref} expired")
            return path.read_bytes()
        except FileNotFoundError:
            raise FrameNotFound(f"frame {frame_ref} is not in the store (expired or never stored)") from None

    def expire(self) -> int:
        """Deletes frames older than the time to live; returns how many. An entry it cannot list or remove (a volume's
        lost+found, which root alone may read) is left, said in one warning, and the others still expire: the
        producer process calls this beside all its cameras, and one such entry must not end it."""
        if not self.directory.is_dir():
            return 0
        cutoff = self.clock() - self.ttl_s
        removed, left = 0, []
        for folder in self.directory.iterdir():
            try:
                if not folder.is_dir():
                    continue
                paths = list(folder.iterdir())
            except OSError as exc:
                left.append(exc)
                continue
            for path in paths:
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass  # another process expired it first
                except OSError as exc:
                    left.append(exc)
        if left:
            log.warning("frame store: %d entries could not be expired, left as they are (the first: %s)", len(left),
                        left[0])
        return removed


def open_frame_store(config: Config) -> FrameStore:
    """The frame store of a site; producer and consumers must see the same one."""
    settings = config.producer
    return LocalFrameStore(Path(config.resolve_path(settings.frame_store_dir)), settings.frame_store_ttl_s)
