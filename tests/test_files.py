"""replace_file: whole files, on the disk, permissions kept, nothing left behind."""
import errno
import os
from pathlib import Path

import pytest

from infra.files import replace_file


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
