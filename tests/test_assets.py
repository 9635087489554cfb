"""Assets by name: mirror first, then the user cache, then a sha256-checked download from a local stand-in server."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import assets
from infra.assets import Asset, AssetError, AssetFile, UnknownAssetError
from tests.asset_server import canonical_tree, serving
from tests.conftest import REPO

CLIP = b"not really a video, but bytes with a known hash"
XML, BIN = b"<net/>", b"\x00\x01weights"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CATALOGUE = {asset.name: asset for asset in (
    Asset("clip.avi", "data/video/clip.avi",
          (AssetFile("clip.avi", sha(CLIP), "https://example.invalid/owner/clips/0123abc/clip.avi"),)),
    Asset("tiny_openvino_model", "models/tiny_openvino_model", (
        AssetFile("tiny.xml", sha(XML), "https://example.invalid/owner/models/4567def/tiny_openvino_model/tiny.xml"),
        AssetFile("tiny.bin", sha(BIN), "https://example.invalid/owner/models/4567def/tiny_openvino_model/tiny.bin"),
    ), folder=True),
)}
FOLDER_BODIES = zip(CATALOGUE["tiny_openvino_model"].files, (XML, BIN), strict=True)
GOOD = {CATALOGUE["clip.avi"].files[0].url: CLIP, **{file.url: body for file, body in FOLDER_BODIES}}


@pytest.fixture
def no_mirror(tmp_path, monkeypatch) -> Path:
    """No mirror anywhere (an empty one configured, the shared folder hidden); returns the empty cache folder."""
    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv("CITYGUARD_ASSET_MIRROR", str(tmp_path / "empty-mirror"))
    monkeypatch.setenv("CITYGUARD_SHARED_DIR", str(tmp_path / "no-shared"))
    monkeypatch.setenv("CITYGUARD_ASSET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path, monkeypatch):
    with serving(canonical_tree(tmp_path / "www", list(CATALOGUE.values()), GOOD)) as (base_url, requested):
        monkeypatch.setenv("CITYGUARD_ASSET_BASE_URL", base_url)
        yield requested


def test_plain_paths_and_urls_pass_through_unchanged():
    for value in ("clip.avi", "../videos/a.mp4", "/abs/b.mp4", "rtsp://cam/1", "0"):
        assert assets.resolve(value, CATALOGUE) == value


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownAssetError, match=r"unknown asset 'nope' \(known: clip.avi, tiny_openvino_model\)"):
        assets.resolve("asset:nope", CATALOGUE)


def test_a_configured_mirror_comes_first_and_nothing_is_downloaded(tmp_path, no_mirror, server, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "data" / "video").mkdir(parents=True)
    (mirror / "data" / "video" / "clip.avi").write_bytes(CLIP)
    monkeypatch.setenv("CITYGUARD_ASSET_MIRROR", str(mirror))
    assert assets.resolve("asset:clip.avi", CATALOGUE) == str(mirror / "data" / "video" / "clip.avi")
    assert server == [] and not no_mirror.exists()


def test_the_shared_folder_is_the_fallback_mirror(tmp_path, no_mirror, server, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "models" / "tiny_openvino_model").mkdir(parents=True)
    for name, body in (("tiny.xml", XML), ("tiny.bin", BIN)):
        (shared / "models" / "tiny_openvino_model" / name).write_bytes(body)
    monkeypatch.setenv("CITYGUARD_SHARED_DIR", str(shared))
    assert assets.asset_path("tiny_openvino_model", CATALOGUE) == shared / "models" / "tiny_openvino_model"
    assert server == []


def test_without_a_mirror_the_asset_is_downloaded_once_into_the_cache(no_mirror, server):
    path = Path(assets.resolve("asset:clip.avi", CATALOGUE))
    assert path == no_mirror / "clip.avi" and path.read_bytes() == CLIP
    assert server == ["/owner/clips/0123abc/clip.avi"]  # the canonical URL's path on the stand-in host
    assert Path(assets.resolve("asset:clip.avi", CATALOGUE)) == path
    assert len(server) == 1, "the second lookup is a cache hit"


def test_a_folder_asset_arrives_whole(no_mirror, server):
    folder = assets.asset_path("tiny_openvino_model", CATALOGUE)
    assert folder == no_mirror / "tiny_openvino_model"
    assert (folder / "tiny.xml").read_bytes() == XML and (folder / "tiny.bin").read_bytes() == BIN
    assert sorted(p.name for p in no_mirror.iterdir()) == ["tiny_openvino_model"]  # no staging folder left


def test_wrong_content_is_refused_naming_both_hashes_and_nothing_is_cached(tmp_path, no_mirror, monkeypatch):
    tampered = {**GOOD, CATALOGUE["clip.avi"].files[0].url: b"something else"}
    with serving(canonical_tree(tmp_path / "bad", list(CATALOGUE.values()), tampered)) as (base_url, _):
        monkeypatch.setenv("CITYGUARD_ASSET_BASE_URL", base_url)
        with pytest.raises(AssetError) as raised:
            assets.resolve("asset:clip.avi", CATALOGUE)
    message = str(raised.value)
    assert "\n" not in message and "clip.avi" in message
    assert sha(b"something else") in message and sha(CLIP) in message
    assert list(no_mirror.iterdir()) == []


def test_an_unreachable_server_is_a_one_line_error(no_mirror, monkeypatch):
    with serving(no_mirror.parent) as (base_url, _):
        pass  # started and stopped: nothing listens on that port any more
    monkeypatch.setenv("CITYGUARD_ASSET_BASE_URL", base_url)
    unreachable = r"cannot download asset clip\.avi from http://127\.0\.0\.1:\d+/owner/"
    with pytest.raises(AssetError, match=unreachable) as raised:
        assets.resolve("asset:clip.avi", CATALOGUE)
    assert "\n" not in str(raised.value) and list(no_mirror.iterdir()) == []


def test_the_catalogue_matches_the_shared_copies():
    shared = REPO.parent / "shared"
    if not shared.is_dir():
        pytest.skip("no shared folder beside the repository")
    for asset in assets.CATALOGUE.values():
        location = shared / asset.mirror_path
        for file in asset.files:
            path = location / file.path if asset.folder else location
            assert hashlib.sha256(path.read_bytes()).hexdigest() == file.sha256, path


def test_the_cli_reports_an_unobtainable_asset_in_one_line(no_mirror):
    # The capture benchmark plays asset:vtest.avi by default; with no mirror and no server it cannot get it.
    env = {**os.environ, "CITYGUARD_ASSET_BASE_URL": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "cityguard", "bench", "capture"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    # The download logged as it starts (a command waiting for it says why), then the error in one line.
    fetching, error = result.stderr.splitlines()
    assert fetching.endswith(f"fetching asset vtest.avi into {no_mirror / 'vtest.avi'} (once: it is kept there)")
    assert error.startswith("cityguard: error: cannot download asset vtest.avi from http://127.0.0.1:9/")
