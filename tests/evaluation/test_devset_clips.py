"""Clip development sets (manifests with `clips`): built from a local copy with sha256 checks and held-out refusal,
and the traffic and walkway sets' manifests agree with their scene configurations and labels."""
from __future__ import annotations

import hashlib

import pytest
import yaml

from cityguard.evaluation.devset import DevsetError, build_devset, load_manifest
from schemas.settings.config import load_config
from tests.conftest import REPO

TRAFFIC = REPO / "tests" / "devsets" / "traffic"


def clip_manifest(tmp_path, data: bytes, repo: str = "someone/traffic", sha256: str | None = None):
    (tmp_path / "mirror" / "videos").mkdir(parents=True)
    (tmp_path / "mirror" / "videos" / "crash.mp4").write_bytes(data)
    (tmp_path / "events.csv").write_text("camera,type,start,end\ncam,collision,1.0,5.0\n")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "test", "labels": "events.csv", "deny": {"repos": ["bad/repo"], "path_patterns": ["ped2"]},
        "clips": [{"camera": "cam", "file": "cam.mp4", "sha256": sha256 or hashlib.sha256(data).hexdigest(),
                   "source": {"repo": repo, "commit": "0" * 40, "path": "videos/crash.mp4"}}]}))
    return manifest


def test_a_clip_set_is_built_with_its_labels_from_a_local_copy(tmp_path):
    built = build_devset(clip_manifest(tmp_path, b"a clip"), tmp_path / "out", tmp_path / "mirror")
    assert [clip.id for clip in built] == ["cam"]
    assert (tmp_path / "out" / "clips" / "cam.mp4").read_bytes() == b"a clip"
    assert (tmp_path / "out" / "events.csv").read_text().startswith("camera,type,start,end")


@pytest.mark.parametrize(("repo", "sha256", "message"), [
    ("bad/repo", None, "repository bad/repo is held out"),
    ("someone/traffic", "0" * 64, "has sha256"),
])
def test_a_held_out_or_changed_clip_is_refused(tmp_path, repo, sha256, message):
    with pytest.raises(DevsetError, match=message):
        build_devset(clip_manifest(tmp_path, b"a clip", repo, sha256), tmp_path / "out", tmp_path / "mirror")


def test_the_traffic_manifest_matches_its_scene_configurations_and_labels():
    manifest = load_manifest(TRAFFIC / "manifest.yaml")
    cameras = {camera.id for camera in load_config(TRAFFIC / "site.yaml").cameras}
    assert {clip.id for clip in manifest.clips} == cameras
    labelled = {line.split(",")[0] for line in (TRAFFIC / manifest.labels).read_text().splitlines()[1:]}
    assert labelled <= cameras
    assert all(len(clip.clip.sha256) == 64 and len(clip.commit) == 40 for clip in manifest.clips)


def test_the_walkway_manifest_matches_its_scene_configurations_and_labels():
    """Its clips are frame folders, read by no builder: the manifest is checked here instead."""
    walkway = TRAFFIC / "walkway"
    manifest = yaml.safe_load((walkway / "manifest.yaml").read_text(encoding="utf-8"))
    cameras = {camera.id for camera in load_config(walkway / "site.yaml").cameras}
    listed = [clip["camera"] for clip in manifest["clips"] + manifest["normal_clips"]]
    assert sorted(listed) == sorted(cameras) and len(set(listed)) == len(listed)
    labelled = {line.split(",")[0] for line in (walkway / "events.csv").read_text().splitlines()[1:]}
    assert labelled == {clip["camera"] for clip in manifest["clips"]}  # the normal clips have no label, by their split
    assert all(len(clip["frames_sha256"]) == 64 for clip in manifest["clips"] + manifest["normal_clips"])
