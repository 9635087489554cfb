"""Sample clips and default models by name (`asset:vtest.avi`): from a local mirror folder when one is there, else
downloaded once from the canonical public URL into the user cache, checked by sha256.

Lookup order: CITYGUARD_ASSET_MIRROR (a folder laid out like the catalogue's mirror paths), the `shared` folder
beside the repository (or CITYGUARD_SHARED_DIR), the user cache (CITYGUARD_ASSET_CACHE, else
$XDG_CACHE_HOME/cityguard/assets, else ~/.cache/cityguard/assets), then a download. CITYGUARD_ASSET_BASE_URL
replaces the scheme and host of the canonical URLs (the path is kept), so an internal server can stand in for them.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PREFIX = "asset:"
REPOSITORY = Path(__file__).resolve().parent.parent
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20


class AssetError(RuntimeError):
    """An asset could not be provided: not found anywhere, download failed or its content is not the expected one."""


class UnknownAssetError(AssetError):
    """The configuration names an asset the catalogue does not list."""


@dataclass(frozen=True)
class AssetFile:
    path: str  # inside the asset's folder; for a single-file asset, the file name
    sha256: str
    url: str


@dataclass(frozen=True)
class Asset:
    name: str
    mirror_path: str  # relative to a mirror's root
    files: tuple[AssetFile, ...]
    folder: bool = False  # a folder of files (an OpenVINO export) rather than one file


def github_raw(repository: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repository}/{commit}/{path}"


YOLO11N_OPENVINO = ("yas-sim/ultralytics_yolo11_optimization", "04a298d3be10a76bf2be83f812bd5195e17e4c6f")
CATALOGUE: dict[str, Asset] = {asset.name: asset for asset in (
    Asset("vtest.avi", "data/video/vtest.avi", (AssetFile(
        "vtest.avi", "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
        github_raw("opencv/opencv", "0dd31c3bba49e26298458ce2e18969a31dbd7df8", "samples/data/vtest.avi")),)),
    Asset("car-detection.mp4", "data/video/car-detection.mp4", (AssetFile(
        "car-detection.mp4", "d31e0ebf194cc16e50eea784e7c3b0b1bb7976a4fb9b3fec26cb92a6704cca34",
        github_raw("intel-iot-devkit/sample-videos", "57978890822836f2b4743852f04f62fc511757e4",
                   "car-detection.mp4")),)),
    Asset("person-bicycle-car-detection.gif", "data/video/person-bicycle-car-detection.gif", (AssetFile(
        "person-bicycle-car-detection.gif", "be7f06d3b268fa3d0906f52faef80d14a4788da7a6825197667f474e26caf246",
        github_raw("intel-iot-devkit/sample-videos", "57978890822836f2b4743852f04f62fc511757e4",
                   "preview/person-bicycle-car-detection.gif")),)),
    Asset("yolo11n_int8_openvino_model", "models/yolo11n_int8_openvino_model", tuple(
        AssetFile(name, sha256, github_raw(*YOLO11N_OPENVINO, f"yolo11n_int8_openvino_model/{name}"))
        for name, sha256 in (
            ("yolo11n.xml", "fedac70f9389c55a2a604e957f66ed8195cda1dd6eb4eb7d8b98919d8c43753d"),
            ("yolo11n.bin", "df1ce92b661e326a11e016ba380fde8cb7ddda528a920d0c4fcba98b69322a9b"),
            ("metadata.yaml", "229ff30357afb80d9ee8a7bef0fbe6ed2c9ec431e976b0c84ba4f931be85e682"),
        )), folder=True),
    Asset("yolov8n_dynint8.onnx", "models/yolov8n_dynint8.onnx", (AssetFile(
        "yolov8n_dynint8.onnx", "83de8f0d2cd521e00ae2b138c340a03dece35b060b3898509bdc69afff417312",
        github_raw("Lamri-Meriem/edge-object-detection", "6f7f95f70dd52a7805a76a4a1d568af35d34608b",
                   "yolov8n_int8.onnx")),)),
)}


def is_asset(value: str) -> bool:
    return value.startswith(PREFIX)


def resolve(value: str, catalogue: dict[str, Asset] = CATALOGUE) -> str:
    """A local path for `asset:NAME`, fetched if need be; any other value (path, URL) unchanged."""
    if not is_asset(value):
        return value
    return str(asset_path(value[len(PREFIX):], catalogue))


def catalogued(name: str, catalogue: dict[str, Asset] = CATALOGUE) -> Asset:
    """The asset of that name; UnknownAssetError naming the known ones (nothing is fetched)."""
    asset = catalogue.get(name)
    if asset is None:
        raise UnknownAssetError(f"unknown asset {name!r} (known: {', '.join(sorted(catalogue))})")
    return asset


def asset_path(name: str, catalogue: dict[str, Asset] = CATALOGUE) -> Path:
    """Where the asset lies on this machine: a mirror, the cache, or the cache after a download."""
    found = asset_here(name, catalogue)
    if found is not None:
        return found
    asset = catalogued(name, catalogue)
    cached = cache_dir() / asset.name
    download(asset, cached)
    return cached


def asset_here(name: str, catalogue: dict[str, Asset] = CATALOGUE) -> Path | None:
    """Where the asset lies on this machine already, a mirror or the cache; None where it would be downloaded."""
    asset = catalogued(name, catalogue)
    for root in mirror_roots():
        candidate = root / asset.mirror_path
        if is_complete(asset, candidate):
            return candidate
    cached = cache_dir() / asset.name
    return cached if is_complete(asset, cached) else None


def mirror_roots() -> list[Path]:
    roots = [Path(os.environ["CITYGUARD_ASSET_MIRROR"])] if os.environ.get("CITYGUARD_ASSET_MIRROR") else []
    return [*roots, Path(os.environ.get("CITYGUARD_SHARED_DIR") or REPOSITORY.parent / "shared")]


def cache_dir() -> Path:
    if os.environ.get("CITYGUARD_ASSET_CACHE"):
        return Path(os.environ["CITYGUARD_ASSET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cityguard" / "assets"


def is_complete(asset: Asset, location: Path) -> bool:
    """Mirror and cache entries are trusted once present: the cache only ever receives checked, whole files."""
    if asset.folder:
        return all((location / file.path).is_file() for file in asset.files)
    return location.is_file()


def download_url(url: str) -> str:
    base = os.environ.get("CITYGUARD_ASSET_BASE_URL")
    return base.rstrip("/") + urlsplit(url).path if base else url


def download(asset: Asset, target: Path) -> None:
    """Fetches every file into a temporary folder beside `target`, checks each sha256, then renames into place, so
    the cache never holds a partial or wrong asset (and concurrent fetches of one asset both end with a good one)."""
    log.info("fetching asset %s into %s (once: it is kept there)", asset.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=target.parent))
    try:
        for file in asset.files:
            fetch_checked(asset, file, staging / file.path)
        source = staging if asset.folder else staging / asset.files[0].path
        try:
            os.replace(source, target)
        except OSError:
            if not is_complete(asset, target):  # another process finished the same asset first: keep theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_checked(asset: Asset, file: AssetFile, destination: Path) -> None:
    url = download_url(file.url)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, destination.open("wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise AssetError(f"cannot download asset {asset.name} from {url}: {reason}; "
                         f"put a copy under CITYGUARD_ASSET_MIRROR/{asset.mirror_path} instead") from None
    if digest.hexdigest() != file.sha256:
        raise AssetError(f"asset {asset.name}: {file.path} from {url} has sha256 {digest.hexdigest()}, "
                         f"expected {file.sha256}")
