"""replace_file: whole files, permissions kept, nothing left behind."""
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
