"""replace_file and replace_tree: whole files and folders, on the disk, permissions kept, nothing left behind."""
import errno
import os
from pathlib import Path

import pytest

from infra.files import replace_file, replace_tree, restore_replaced


def test_a_replaced_file_is_whole_and_keeps_its_permissions(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("old: 1\n")
    path.chmod(0o640)
    replace_file(path, "new: 2\n")
    assert path.read_text() == "new: 2\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [entry.name for entry in tmp_path.iterdir()] == ["site.yaml"]


def test_a_new_file_gets_the_permissions_open_would_give(tmp_path):
    replace_file(tmp_path / "deep" / "serving.json", b"{}")
    (tmp_path / "opened.json").write_bytes(b"{}")
    assert (tmp_path / "deep" / "serving.json").stat().st_mode == (tmp_path / "opened.json").stat().st_mode


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "filters.json"
    path.write_text("{}")
    with pytest.raises(TypeError):
        replace_file(path, 12)  # neither bytes nor text
    assert path.read_text() == "{}" and [entry.name for entry in tmp_path.iterdir()] == ["filters.json"]


def test_a_mode_given_is_the_files_whatever_was_there(tmp_path):
    path = tmp_path / "17.jpg"
    path.write_bytes(b"old")
    path.chmod(0o644)
    replace_file(path, b"\xff\xd8", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == b"\xff\xd8"


def test_the_data_and_the_rename_reach_the_disk_before_the_file_is_replaced(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle):
        synced.append((os.path.realpath(f"/proc/self/fd/{handle}"), bool(renamed)))
        real_fsync(handle)

    def replace(source, target):
        renamed.append(target)
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "site.yaml"
    replace_file(path, "new: 2\n")
    [(temporary, before_rename), (folder, after_rename)] = synced
    assert Path(temporary).name.startswith(".site.yaml.") and not before_rename
    assert folder == str(tmp_path) and after_rename


def test_a_folder_that_cannot_be_synced_still_gets_the_file(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(handle):
        if os.path.isdir(f"/proc/self/fd/{handle}"):
            raise OSError(errno.EINVAL, "Invalid argument")  # as some file systems answer for a folder
        real_fsync(handle)

    monkeypatch.setattr(os, "fsync", fsync)
    replace_file(tmp_path / "serving.json", b"{}")
    assert (tmp_path / "serving.json").read_bytes() == b"{}"


def test_a_file_replaced_through_a_link_keeps_the_link_only_when_asked(tmp_path):
    (tmp_path / "repository").mkdir()
    (tmp_path / "repository" / "site.yaml").write_text("old")
    (tmp_path / "site.yaml").symlink_to(tmp_path / "repository" / "site.yaml")
    replace_file(tmp_path / "site.yaml", "new", follow_link=True)  # a site file linked from a repository
    assert (tmp_path / "site.yaml").is_symlink() and (tmp_path / "repository" / "site.yaml").read_text() == "new"
    (tmp_path / "frame.jpg").symlink_to(tmp_path / "repository" / "site.yaml")  # planted where frames are written
    replace_file(tmp_path / "frame.jpg", "picture")
    assert not (tmp_path / "frame.jpg").is_symlink() and (tmp_path / "repository" / "site.yaml").read_text() == "new"


def write_export(files: dict[str, bytes]):
    """A writer for replace_tree that makes a folder holding `files`."""
    def write(folder: Path) -> None:
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
    return write


def test_a_replaced_folder_holds_the_new_files_only_and_nothing_is_left_beside_it(tmp_path):
    export = tmp_path / "models" / "yolo11n_openvino_model"
    replace_tree(export, write_export({"model.xml": b"old", "model.bin": b"old", "stale.yaml": b"old"}))
    replace_tree(export, write_export({"model.xml": b"new", "model.bin": b"new"}))
    assert {path.name: path.read_bytes() for path in export.iterdir()} == {"model.xml": b"new", "model.bin": b"new"}
    assert [entry.name for entry in export.parent.iterdir()] == ["yolo11n_openvino_model"]


def test_a_write_that_fails_part_way_leaves_the_old_folder_and_no_temporary(tmp_path):
    export = tmp_path / "yolo11n_openvino_model"
    replace_tree(export, write_export({"model.xml": b"old", "model.bin": b"old"}))

    def fail_after_one_file(folder: Path) -> None:
        write_export({"model.xml": b"new"})(folder)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        replace_tree(export, fail_after_one_file)
    assert {path.name: path.read_bytes() for path in export.iterdir()} == {"model.xml": b"old", "model.bin": b"old"}
    assert [entry.name for entry in tmp_path.iterdir()] == ["yolo11n_openvino_model"]


def test_a_file_replaces_a_file_and_the_new_one_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    export = tmp_path / "yolo11n.onnx"
    export.write_bytes(b"old")
    synced, renamed = [], []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(handle):
        synced.append(os.path.realpath(f"/proc/self/fd/{handle}"))
        real_fsync(handle)

    def rename(source, target):
        renamed.append((Path(source).name, Path(target).name, len(synced)))
        real_rename(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    replace_tree(export, lambda path: path.write_bytes(b"new"))
    assert export.read_bytes() == b"new" and [entry.name for entry in tmp_path.iterdir()] == ["yolo11n.onnx"]
    [(_, aside, synced_before), (_, into_place, _)] = renamed
    assert (aside, into_place) == (".yolo11n.onnx.previous", "yolo11n.onnx")
    assert any(Path(path).name == "yolo11n.onnx" for path in synced[:synced_before])
    assert synced[-1] == str(tmp_path)  # the renames themselves


def test_a_replacement_stopped_between_its_renames_is_put_back(tmp_path):
    """Killed after moving the old folder aside: the next replacement, or restore_replaced, finds it again."""
    export = tmp_path / "yolo11n_openvino_model"
    replace_tree(export, write_export({"model.xml": b"old"}))
    export.rename(tmp_path / ".yolo11n_openvino_model.previous")
    restore_replaced(export)
    assert (export / "model.xml").read_bytes() == b"old"
    export.rename(tmp_path / ".yolo11n_openvino_model.previous")

    def fail(folder: Path) -> None:
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        replace_tree(export, fail)
    assert (export / "model.xml").read_bytes() == b"old"
    assert [entry.name for entry in tmp_path.iterdir()] == ["yolo11n_openvino_model"]
