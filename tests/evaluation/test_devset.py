"""Development sets rebuilt from a manifest: sha256 checks, held-out refusal, and the crowd set's own manifest."""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from cityguard.evaluation.devset import (
    DevsetError,
    build_devset,
    held_out_digests,
    held_out_notes,
    load_manifest,
)
from tests.conftest import REPO

CROWD = REPO / "tests" / "devsets" / "crowd"


def write_source(tmp_path: Path, files: dict[str, bytes], repo: str = "someone/crowds",
                 deny_repos: tuple[str, ...] = ("bad/repo",)) -> Path:
    """A local copy of a source repository and a manifest with one item per image/annotation pair."""
    mirror = tmp_path / "mirror"
    for path, data in files.items():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    items = [{"id": f"item{n}", "source": "test", "repo": repo, "commit": "0" * 40,
              "image": {"path": f"img/{n}.jpg", "sha256": hashlib.sha256(files[f"img/{n}.jpg"]).hexdigest()},
              "annotation": {"path": f"gt/{n}.mat", "sha256": hashlib.sha256(files[f"gt/{n}.mat"]).hexdigest()},
              "count": 10 * (n + 1)}
             for n in range(len(files) // 2)]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"name": "test", "deny": {"repos": list(deny_repos),
                                                                  "path_patterns": ["ped2"]}, "items": items}))
    return manifest


FILES = {"img/0.jpg": b"image zero", "gt/0.mat": b"points zero", "img/1.jpg": b"image one", "gt/1.mat": b"points one"}


def test_builds_images_annotations_and_truth_from_a_local_copy(tmp_path):
    manifest = write_source(tmp_path, FILES)
    build_devset(manifest, tmp_path / "out", tmp_path / "mirror")
    assert (tmp_path / "out" / "images" / "item1.jpg").read_bytes() == b"image one"
    assert (tmp_path / "out" / "annotations" / "item0.mat").read_bytes() == b"points zero"
    rows = list(csv.reader((tmp_path / "out" / "truth.csv").open()))
    assert rows == [["file", "count"], ["item0.jpg", "10"], ["item1.jpg", "20"]]


def test_a_set_of_several_regimes_gets_a_truth_file_for_each(tmp_path):
    import cv2

    manifest = write_source(tmp_path, FILES)
    data = yaml.safe_load(manifest.read_text())
    data["items"][0]["source"], data["items"][1]["source"] = "shanghaitech-a", "mot15-campus"
    _, video = write_video_source(tmp_path, frames=2)
    data["frames"] = yaml.safe_load(frames_manifest(tmp_path, video, [1]).read_text())["frames"]
    manifest.write_text(yaml.safe_dump(data))
    build_devset(manifest, tmp_path / "out", tmp_path / "mirror")
    truth = {path.name: list(csv.reader(path.open())) for path in (tmp_path / "out").glob("truth*.csv")}
    assert truth == {"truth.csv": [["file", "count"], ["item0.jpg", "10"], ["item1.jpg", "20"], ["street-f1.png", "4"]],
                     "truth-shanghaitech.csv": [["file", "count"], ["item0.jpg", "10"]],
                     "truth-mot15.csv": [["file", "count"], ["item1.jpg", "20"]],
                     "truth-frames.csv": [["file", "count"], ["street-f1.png", "4"]]}
    assert cv2.imread(str(tmp_path / "out" / "images" / "street-f1.png")) is not None


def test_a_changed_file_is_refused(tmp_path):
    manifest = write_source(tmp_path, FILES)
    (tmp_path / "mirror" / "img" / "1.jpg").write_bytes(b"another image")
    with pytest.raises(DevsetError, match=r"item1: img/1.jpg has sha256 .*, the manifest says"):
        build_devset(manifest, tmp_path / "out", tmp_path / "mirror")


def test_an_annotation_kept_in_another_repository_is_fetched_from_it_and_refused_when_that_is_held_out(tmp_path):
    manifest = write_source(tmp_path, FILES)
    data = yaml.safe_load(manifest.read_text())
    data["items"][0]["annotation"].update(repo="other/boxes", commit="1" * 40)
    manifest.write_text(yaml.safe_dump(data))
    (tmp_path / "mirror" / "gt" / "0.mat").rename(tmp_path / "points zero")  # not beside the images any more
    (tmp_path / "sources" / "other+boxes" / "gt").mkdir(parents=True)
    (tmp_path / "points zero").rename(tmp_path / "sources" / "other+boxes" / "gt" / "0.mat")
    (tmp_path / "mirror").rename(tmp_path / "sources" / "someone+crowds")
    build_devset(manifest, tmp_path / "out", tmp_path / "sources")
    assert (tmp_path / "out" / "annotations" / "item0.mat").read_bytes() == b"points zero"
    data["deny"]["repos"].append("Other/Boxes")
    manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(DevsetError, match="refused: item0: repository other/boxes is held out"):
        build_devset(manifest, tmp_path / "again", tmp_path / "sources")


def test_held_out_sources_are_refused_before_anything_is_written(tmp_path):
    manifest = write_source(tmp_path, FILES, repo="Bad/Repo")
    with pytest.raises(DevsetError, match="refused: item0: repository Bad/Repo is held out"):
        build_devset(manifest, tmp_path / "out", tmp_path / "mirror")
    assert not (tmp_path / "out").exists()

    manifest = write_source(tmp_path, FILES)
    note = tmp_path / "held-out.md"
    note.write_text(f"# held out\n{hashlib.sha256(b'image one').hexdigest()}\n")
    with pytest.raises(DevsetError, match="refused: item1: img/1.jpg has a held-out sha256"):
        build_devset(manifest, tmp_path / "out", tmp_path / "mirror", [note])


def test_a_copy_of_a_held_out_dataset_in_a_repository_named_after_it_is_refused(tmp_path):
    manifest = write_source(tmp_path, FILES, repo="someone/UCSD-Ped2")
    with pytest.raises(DevsetError, match="refused: item0: someone/UCSD-Ped2/img/0.jpg belongs to a held-out"):
        build_devset(manifest, tmp_path / "out", tmp_path / "mirror")


def test_a_held_out_note_that_is_not_there_is_an_error_not_an_empty_list(tmp_path):
    assert held_out_digests([]) == frozenset()
    with pytest.raises(FileNotFoundError):
        held_out_digests([tmp_path / "held-out-sourcse.md"])


def test_every_held_out_note_the_asset_lookup_reads_counts(tmp_path, monkeypatch):
    """An older copy of the note in the asset mirror must not hide the shared one's newer digests."""
    for folder, digest in (("mirror", "a" * 64), ("shared", "b" * 64)):
        (tmp_path / folder / "reference").mkdir(parents=True)
        (tmp_path / folder / "reference" / "held-out-sources.md").write_text(f"{digest}\n")
    monkeypatch.setenv("CITYGUARD_ASSET_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("CITYGUARD_SHARED_DIR", str(tmp_path / "shared"))
    assert held_out_digests(held_out_notes(None)) == {"a" * 64, "b" * 64}


def write_video_source(tmp_path: Path, frames: int) -> tuple[Path, bytes]:
    """A local copy of a repository holding a short video whose frame n is a flat image of grey level 40 n."""
    import cv2

    path = tmp_path / "mirror" / "someone" / "clips" / "street.avi"
    path.parent.mkdir(parents=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for n in range(frames):
        writer.write(np.full((48, 64, 3), 40 * n, dtype=np.uint8))
    writer.release()
    return path, path.read_bytes()


def frames_manifest(tmp_path: Path, video: bytes, indices: list[int]) -> Path:
    frames = [{"id": f"street-f{n}", "repo": "someone/clips", "commit": "0" * 40, "frame": n, "count": n + 3,
               "video": {"path": "street.avi", "sha256": hashlib.sha256(video).hexdigest()}} for n in indices]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"name": "test", "deny": {"repos": [], "path_patterns": []}, "items": [],
                                        "frames": frames}))
    return manifest


@pytest.mark.parametrize("devset", ["crowd", "traffic"])
def test_the_manifests_deny_every_copy_of_the_held_out_sequences(devset):
    manifest = load_manifest(REPO / "tests" / "devsets" / devset / "manifest.yaml")

    def denied(path: str) -> bool:
        return any(pattern.search(path) for pattern in manifest.denied_path_patterns)

    for path in ("MOT17-02-FRCNN/img1/000001.jpg", "data/MOT17/train/04/img1/000001.jpg", "clips/mot17_09.mp4",
                 "MOT17-09.avi", "someone/MOT17-4-SDP/gt.txt", "UCSDped2/Test/Test001/001.tif",
                 "datasets/ucsd/ped2/testing/frames/01/000.jpg"):
        assert denied(path), path
    for path in ("MOT17-05-FRCNN/img1/000001.jpg", "MOT17-10.avi", "MOT17/train/11/x.jpg", "MOT17-020.mp4",
                 "UCSDped1/Test/Test001/001.tif", "MOT20-02/img1/000001.jpg"):
        assert not denied(path), path


def test_hand_counted_frames_are_decoded_from_the_verified_video(tmp_path):
    import cv2

    _, video = write_video_source(tmp_path, frames=4)
    manifest = frames_manifest(tmp_path, video, [1, 3])
    build_devset(manifest, tmp_path / "out", tmp_path / "mirror")
    for n in (1, 3):
        image = cv2.imread(str(tmp_path / "out" / "images" / f"street-f{n}.png"))
        assert image.shape == (48, 64, 3) and abs(float(image.mean()) - 40 * n) < 3
    rows = list(csv.reader((tmp_path / "out" / "truth.csv").open()))
    assert rows == [["file", "count"], ["street-f1.png", "4"], ["street-f3.png", "6"]]


def test_a_frame_past_the_end_of_its_video_is_an_error(tmp_path):
    _, video = write_video_source(tmp_path, frames=2)
    with pytest.raises(DevsetError, match="street-f5: street.avi has no frame 5"):
        build_devset(frames_manifest(tmp_path, video, [0, 5]), tmp_path / "out", tmp_path / "mirror")


def test_the_crowd_manifest_is_complete_and_clear_of_held_out_sources():
    manifest = load_manifest(CROWD / "manifest.yaml")
    assert len({item.id for item in manifest.items}) == len(manifest.items)
    assert sum(item.id.startswith("sht") for item in manifest.items) == 68
    # fixed-camera pedestrian frames with 2D MOT 2015 box annotations: 20 of each sequence, 3-8 people
    mot = [item for item in manifest.items if item.id.startswith("mot15-")]
    assert len(mot) == 60 and {item.source for item in mot} == {
        "mot15-pets09-s2l1", "mot15-tud-campus", "mot15-tud-stadtmitte"}
    assert min(item.count for item in mot) == 3 and max(item.count for item in mot) == 8
    # shopping-mall CCTV frames with the dataset's own head annotations: 80 of its 2,000, 16-50 people
    mall = [item for item in manifest.items if item.source == "mall"]
    assert len(mall) == 80 and {item.repo for item in mall} == {"jeremiastraub/CountNet"}
    assert min(item.count for item in mall) == 16 and max(item.count for item in mall) == 50
    digests = held_out_digests(held_out_notes(None))
    for item in manifest.items:
        assert item.repo.lower() not in manifest.denied_repos
        assert (item.annotation.repo or item.repo).lower() not in manifest.denied_repos
        for file in (item.image, item.annotation):
            assert len(file.sha256) == 64 and file.sha256 not in digests
    # street-camera frames, counted by eye: vtest.avi's (people on a campus road) and an empty car-park aisle's
    assert [(frame.id.split("-f")[0], frame.count) for frame in manifest.frames] == [
        *(("vtest", count) for count in (3, 7, 8, 7, 6, 3, 4, 6, 6, 9, 8)), *(("carpark", 0),) * 4]
    for frame in manifest.frames:
        assert frame.repo.lower() not in manifest.denied_repos and frame.video.sha256 not in digests
    assert "uestcchicken/crowd-counting-mcnn" in manifest.denied_repos


@pytest.mark.slow
def test_the_built_crowd_set_reproduces_the_committed_measurements():
    """Needs the images: set CITYGUARD_CROWD_DEVSET to a folder made by `cityguard devset build crowd --out DIR`."""
    folder = os.environ.get("CITYGUARD_CROWD_DEVSET")
    if not folder or not (Path(folder) / "images").is_dir():
        pytest.skip("crowd dev set not built: run `cityguard devset build crowd --out DIR` and set "
                    "CITYGUARD_CROWD_DEVSET=DIR")
    import cv2

    from cityguard.evaluation.runners import evaluation_detector
    from processors.inference.density_map import DensityMapCounter
    from schemas.settings.config import Config

    config = Config()
    counter = DensityMapCounter.from_config(config)
    detector = evaluation_detector(config, config.model.confidence)

    def read(image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The image and the detector's person boxes in it, as the inference stage gives them to the map."""
        image = cv2.imread(str(next((Path(folder) / "images").glob(f"{image_id}.*"))))
        result = detector.detect([image])[0]
        return image, result.xyxy[(result.class_id == 0) & (result.confidence >= config.model.confidence)]

    column = f"multi_scale_{config.analytics.density_model.dense_cell_people:.2f}"
    measured = {row["id"]: row for row in csv.DictReader((CROWD / "measurements.csv").open())}
    for image_id in ("shtA-test-IMG_2", "shtB-test-IMG_219", "shtB-test-IMG_63"):
        image, _ = read(image_id)
        people = float(counter.multi_scale_map(image).sum())
        assert people == pytest.approx(float(measured[image_id][column]), rel=0.02)
    # a sparse street of tall people (median box 273 px of 768): narrowed to 1024 * 90 / 273 = 338 -> 320 px
    image, boxes = read("shtB-test-IMG_198")
    people = float(counter.multi_scale_map(image, boxes).sum())
    assert people == pytest.approx(float(measured["shtB-test-IMG_198"]["multi_scale_w320"]), rel=0.02)
    assert people < 0.7 * float(measured["shtB-test-IMG_198"][column])
    # a sparse street of small people the 512 px map sees in part (0.93 under each box): widened to 640 px
    image, boxes = read("shtB-test-IMG_13")
    people = float(counter.multi_scale_map(image, boxes).sum())
    assert people == pytest.approx(float(measured["shtB-test-IMG_13"]["multi_scale_w640"]), rel=0.02)
    # mall frames in steep perspective (measurements_mall.csv): one widened to its own width, one the map does not see
    mall = {row["id"]: row for row in csv.DictReader((CROWD / "measurements_mall.csv").open())}
    for image_id, width in (("mall-000406", "640"), ("mall-000052", "0")):
        assert mall[image_id]["rescaled_width"] == width
        image, boxes = read(image_id)
        people = float(counter.multi_scale_map(image, boxes).sum())
        assert people == pytest.approx(float(mall[image_id]["multi_scale_0.35"]), rel=0.02)
