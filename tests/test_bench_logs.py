"""A benchmark's error names its log folder: a temporary one must still be there to read."""
from __future__ import annotations

import pytest

from cityguard.bench import log_folder


def test_a_temporary_log_folder_outlives_an_error_and_goes_after_a_clean_run():
    with pytest.raises(RuntimeError), log_folder(None, "cityguard-test-bench-") as failed:
        (failed / "worker.log").write_text("why it failed")
        raise RuntimeError(f"the worker exited; see {failed}")
    assert (failed / "worker.log").read_text() == "why it failed"
    with log_folder(None, "cityguard-test-bench-") as clean:
        (clean / "worker.log").write_text("fine")
    assert not clean.exists()
    with pytest.raises(KeyboardInterrupt), log_folder(None, "cityguard-test-bench-") as interrupted:
        raise KeyboardInterrupt
    assert not interrupted.exists()
    (failed / "worker.log").unlink()
    failed.rmdir()


def test_a_given_log_folder_is_made_and_kept(tmp_path):
    with log_folder(tmp_path / "logs", "cityguard-test-bench-") as given:
        (given / "worker.log").write_text("kept")
    assert (tmp_path / "logs" / "worker.log").read_text() == "kept"
