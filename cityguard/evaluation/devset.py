"""Labelled development sets described by a manifest in the repository and rebuilt on demand (the data itself is
never committed): every file is fetched from a public repository at a pinned commit, or copied from a local copy
of it, checked against its recorded sha256, and refused when it comes from a held-out source.

Built layout of an image set (`items`): `images/<id><suffix>`, `annotations/<id><suffix>` and `truth.csv`
(`file,count`), which `cityguard eval counts --images DIR/images --truth DIR/truth.csv` reads as it is. Frames of a
public video counted by hand (`frames`) join it as `images/<id>.png`, decoded from the verified video. A clip set
(`clips`) gives `clips/<file>` and, when the manifest names a `labels` file beside it, a copy of it (for
`cityguard eval events --truth`).
"""
from __future__ import annotations

import csv
import hashlib
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from infra.assets import mirror_roots

RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
DOWNLOAD_TIMEOUT_S = 60


class DevsetError(ValueError):
    """A manifest that cannot be used, or a file that does not match it; the message names the item."""


@dataclass(frozen=True)
class DevsetFile:
    path: str  # inside the source repository
    sha256: str
    repo: str | None = None  # a file kept in another repository than its item's (frames in one, annotations in
    commit: str | None = None  # another): that repository and commit; None: the item's


@dataclass(frozen=True)
class DevsetItem:
    id: str
    source: str
    repo: str
    commit: str
    image: DevsetFile
    annotation: DevsetFile
    count: int


@dataclass(frozen=True)
class DevsetFrame:
    """One frame of a public video with a people count made by hand (the manifest says how)."""

    id: str
    repo: str
    commit: str
    video: DevsetFile
    frame: int  # index in the order OpenCV reads the video (presentation order), from 0
    count: int


@dataclass(frozen=True)
class DevsetClip:
    id: str  # the camera id the clip plays as
    repo: str
    commit: str
    clip: DevsetFile
    file: str  # name in the built clips/ folder


@dataclass(frozen=True)
class Manifest:
    name: str
    items: list[DevsetItem]
    denied_repos: frozenset[str]  # owner/name, compared case-insensitively
    denied_path_patterns: list[re.Pattern]  # held-out datasets and sequences, matched against repo/path
    clips: list[DevsetClip] = ()
    labels: str | None = None  # a file beside the manifest, copied into the built set
    frames: list[DevsetFrame] = ()


def load_manifest(path: Path) -> Manifest:
    data = yaml.safe_load(Path(path).read_text())
    try:
        items = [DevsetItem(id=entry["id"], source=entry["source"], repo=entry["repo"], commit=entry["commit"],
                            image=DevsetFile(**entry["image"]), annotation=DevsetFile(**entry["annotation"]),
                            count=int(entry["count"]))
                 for entry in data.get("items", [])]
        clips = [DevsetClip(id=entry["camera"], repo=entry["source"]["repo"], commit=entry["source"]["commit"],
                            clip=DevsetFile(entry["source"]["path"], entry["sha256"]), file=entry["file"])
                 for entry in data.get("clips", [])]
        frames = [DevsetFrame(id=entry["id"], repo=entry["repo"], commit=entry["commit"],
                              video=DevsetFile(**entry["video"]), frame=int(entry["frame"]), count=int(entry["count"]))
                  for entry in data.get("frames", [])]
        deny = data["deny"]
        denied = frozenset(repo.lower() for repo in deny["repos"])
        patterns = [re.compile(pattern, re.IGNORECASE) for pattern in deny["path_patterns"]]
    except (KeyError, TypeError) as exc:
        raise DevsetError(f"{path}: missing or malformed field {exc}") from None
    ids = [item.id for item in [*items, *clips, *frames]]
    if len(set(ids)) != len(ids):
        raise DevsetError(f"{path}: item ids repeat")
    return Manifest(data["name"], items, denied, patterns, clips, data.get("labels"), frames)


HELD_OUT_NOTE = Path("reference") / "held-out-sources.md"  # inside the shared folder


def held_out_notes(given: Path | None) -> list[Path]:
    """The notes to check against: the one given (which must exist), else every one of the folders the asset lookup
    reads (CITYGUARD_ASSET_MIRROR, CITYGUARD_SHARED_DIR or ../shared), so that an older copy cannot hide a newer
    one; none when there is none, so nothing can be checked (`unchecked_warning` says so)."""
    if given is not None:
        if not Path(given).is_file():
            raise FileNotFoundError(f"no held-out note {given} (--held-out)")
        return [Path(given)]
    return [note for note in (root / HELD_OUT_NOTE for root in mirror_roots()) if note.is_file()]


def unchecked_warning() -> str:
    places = " or ".join(str(root / HELD_OUT_NOTE) for root in mirror_roots())
    return (f"no held-out note ({places}), so files are not checked against held-out sha256 digests "
            "(give --held-out NOTE)")


def held_out_digests(notes: list[Path]) -> frozenset[str]:
    """The sha256 digests the held-out-sources notes list; none without a note (a missing file is an error)."""
    return frozenset(digest for note in notes for digest in SHA256.findall(Path(note).read_text()))


Source = DevsetItem | DevsetClip | DevsetFrame


def _files(item: Source) -> tuple[DevsetFile, ...]:
    if isinstance(item, DevsetClip):
        return (item.clip,)
    return (item.video,) if isinstance(item, DevsetFrame) else (item.image, item.annotation)


def refusal(item: Source, manifest: Manifest, digests: frozenset[str]) -> str | None:
    """Why an item must not be used, or None."""
    for repo in dict.fromkeys([item.repo, *(file.repo for file in _files(item) if file.repo)]):
        if repo.lower() in manifest.denied_repos:
            return f"{item.id}: repository {repo} is held out"
    for file in _files(item):
        # With the repository in front, a copy of a held-out dataset in a repository named after it is caught too.
        where = f"{file.repo or item.repo}/{file.path}"
        if any(pattern.search(where) for pattern in manifest.denied_path_patterns):
            return f"{item.id}: {where} belongs to a held-out dataset or sequence"
        if file.sha256 in digests:
            return f"{item.id}: {file.path} has a held-out sha256"
    return None


def _fetch(item: Source, file: DevsetFile, local: Path | None) -> bytes:
    repo, commit = file.repo or item.repo, file.commit or item.commit
    if local is not None:
        mirrors = (local, local / repo, local / repo.replace("/", "+"))
        for candidate in (mirror / file.path for mirror in mirrors):
            if candidate.exists():
                return candidate.read_bytes()
        raise DevsetError(f"{item.id}: {file.path} is not under {local} (looked in {local}, {local / repo} and "
                          f"{local / repo.replace('/', '+')})")
    url = RAW_URL.format(repo=repo, commit=commit, path=file.path)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except OSError as exc:  # URLError, HTTPError, a timeout: which file, from where, and what to do offline
        reason = getattr(exc, "reason", None) or exc
        raise DevsetError(f"{item.id}: {file.path} could not be downloaded from {url}: {reason} (offline: give "
                          "a local copy of the repositories with --from)") from None


def _verified(item: Source, file: DevsetFile, local: Path | None, digests: frozenset[str]) -> bytes:
    data = _fetch(item, file, local)
    digest = hashlib.sha256(data).hexdigest()
    if digest != file.sha256:
        raise DevsetError(f"{item.id}: {file.path} has sha256 {digest}, the manifest says {file.sha256}")
    if digest in digests:
        raise DevsetError(f"refused: {item.id}: {file.path} has a held-out sha256")
    return data


def _build_clips(manifest: Manifest, folder: Path, out: Path, local: Path | None,
                 digests: frozenset[str]) -> list[DevsetClip]:
    (out / "clips").mkdir(parents=True, exist_ok=True)
    for clip in manifest.clips:
        (out / "clips" / clip.file).write_bytes(_verified(clip, clip.clip, local, digests))
    if manifest.labels:
        (out / manifest.labels).write_bytes((folder / manifest.labels).read_bytes())
    return manifest.clips


def build_devset(manifest_path: Path, out: Path, local: Path | None = None,
                 held_out: list[Path] = ()) -> list[Source]:
    """Writes the set under `out`; raises DevsetError on the first refused or mismatching file, before writing it."""
    manifest = load_manifest(manifest_path)
    digests = held_out_digests(held_out)
    for item in [*manifest.items, *manifest.clips, *manifest.frames]:
        reason = refusal(item, manifest, digests)
        if reason:
            raise DevsetError(f"refused: {reason}")
    if manifest.clips:
        return _build_clips(manifest, Path(manifest_path).parent, out, local, digests)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[tuple[str, int]]] = {}  # per regime: the source's family (shanghaitech, mot15), frames
    for item in manifest.items:
        for file, folder in ((item.image, "images"), (item.annotation, "annotations")):
            (out / folder / f"{item.id}{Path(file.path).suffix}").write_bytes(_verified(item, file, local, digests))
        rows.setdefault(item.source.split("-")[0], []).append((f"{item.id}{Path(item.image.path).suffix}", item.count))
    for frame in _write_frames(manifest.frames, out / "images", local, digests):
        rows.setdefault("frames", []).append((f"{frame.id}.png", frame.count))
    _write_truth(out / "truth.csv", [row for regime in rows.values() for row in regime])
    if len(rows) > 1:  # scored apart: `eval counts` scores the images its truth file lists
        for regime, regime_rows in rows.items():
            _write_truth(out / f"truth-{regime}.csv", regime_rows)
    return [*manifest.items, *manifest.frames]


def _write_truth(path: Path, rows: list[tuple[str, int]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "count"))
        writer.writerows(rows)


def _write_frames(frames: list[DevsetFrame], folder: Path, local: Path | None,
                  digests: frozenset[str]) -> list[DevsetFrame]:
    """Decodes each video once (verified like any other file) and writes the listed frames as PNG."""
    import cv2

    by_video: dict[tuple[str, str, DevsetFile], list[DevsetFrame]] = {}
    for frame in frames:
        by_video.setdefault((frame.repo, frame.commit, frame.video), []).append(frame)
    for group in by_video.values():
        wanted = {frame.frame: frame for frame in group}
        with tempfile.NamedTemporaryFile(suffix=Path(group[0].video.path).suffix) as video:
            video.write(_verified(group[0], group[0].video, local, digests))
            video.flush()
            capture = cv2.VideoCapture(video.name)
            index = 0
            try:
                while wanted and index <= max(wanted):
                    ok, image = capture.read()
                    if not ok:
                        break
                    if index in wanted:
                        cv2.imwrite(str(folder / f"{wanted.pop(index).id}.png"), image)
                    index += 1
            finally:
                capture.release()
        if wanted:
            missing = min(wanted.values(), key=lambda frame: frame.frame)
            raise DevsetError(f"{missing.id}: {missing.video.path} has no frame {missing.frame}")
    return frames
