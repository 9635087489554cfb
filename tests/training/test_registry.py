"""The model registry: numbered versions, the serving pointer, roll-back, and the watcher workers poll."""
import json
import multiprocessing
import os
import re
import shutil

import pytest

from processors.inference.model_registry import ModelRegistry, ServingWatcher, WeightsChanged, weights_digest


def weights(tmp_path, name: str):
    path = tmp_path / name
    path.write_bytes(name.encode())
    return path


def v2_promoted_after_v1(tmp_path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    for name in ("a.pt", "b.pt"):
        registry.register(weights(tmp_path, name), {})
    registry.promote("v1", "first")
    registry.promote("v2", "gate passed")
    return registry


def test_versions_are_numbered_copies_with_their_run_record(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    first = registry.register(weights(tmp_path, "a.pt"), {"kind": "trained", "data_hash": "abc"})
    second = registry.register(weights(tmp_path, "b.pt"), {"kind": "trained", "parent": "v1"})
    assert (first.version, second.version) == ("v1", "v2")
    assert registry.versions() == ["v1", "v2"]
    assert registry.get("v1").weights.read_bytes() == b"a.pt"
    assert json.loads((tmp_path / "registry" / "v1" / "run.json").read_text())["data_hash"] == "abc"
    with pytest.raises(KeyError, match="v9.*registered: v1, v2"):
        registry.get("v9")


def test_a_version_whose_files_changed_since_it_was_registered_is_told_from_one_unchanged(tmp_path):
    export = tmp_path / "best_openvino_model"
    export.mkdir()
    (export / "best.xml").write_text("<net/>")
    (export / "best.bin").write_bytes(b"\0" * 64)
    registry = ModelRegistry(tmp_path / "registry")
    model = registry.register(export, {"weights_sha256": "0" * 64})  # a record copied from elsewhere: replaced
    assert registry.get("v1").run["weights_sha256"] == weights_digest(export)
    registry.get("v1").check_unchanged()
    (model.weights / "best.bin").write_bytes(b"\0" * 32)  # truncated
    with pytest.raises(WeightsChanged, match=re.escape(f"{model.weights}: the files of v1 changed since it was "
                                                       "registered")):
        registry.get("v1").check_unchanged()


def test_a_version_whose_files_changed_is_neither_promoted_nor_rolled_back_to(tmp_path):
    # The workers would refuse it, and go on serving the model the operator meant to replace.
    registry = v2_promoted_after_v1(tmp_path)
    (tmp_path / "registry" / "v1" / "a.pt").write_bytes(b"edited")
    with pytest.raises(ValueError, match=r"cannot roll back: .*the files of v1 changed since it was registered.*; "
                                         r"v2 still serves"):
        registry.rollback()
    assert registry.pointer()["version"] == "v2"
    registry.register(weights(tmp_path, "c.pt"), {})
    (tmp_path / "registry" / "v3" / "c.pt").write_bytes(b"edited")
    with pytest.raises(WeightsChanged, match="the files of v3 changed"):
        registry.promote("v3", "gate passed")
    assert registry.pointer()["version"] == "v2"


def test_a_version_registered_before_its_digest_was_recorded_is_taken_as_it_is(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "a.pt"), {})
    record = tmp_path / "registry" / "v1" / "run.json"
    record.write_text(json.dumps({key: value for key, value in json.loads(record.read_text()).items()
                                  if key != "weights_sha256"}))
    (tmp_path / "registry" / "v1" / "a.pt").write_bytes(b"retrained in place")
    registry.get("v1").check_unchanged()


def test_a_versions_weights_reach_the_disk_before_its_run_record(tmp_path, monkeypatch):
    """A power cut after the run record was written must not leave a complete-looking version with empty weights."""
    export = tmp_path / "best_openvino_model"
    export.mkdir()
    (export / "best.xml").write_text("<net/>")
    (export / "best.bin").write_bytes(b"\0" * 64)
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ModelRegistry(tmp_path / "registry").register(export, {})
    folder = str(tmp_path / "registry" / "v1")
    files = [synced.index(f"{folder}/best_openvino_model/{name}") for name in ("best.xml", "best.bin")]
    record = max(index for index, path in enumerate(synced) if path.startswith(f"{folder}/.run.json."))
    assert max(files) < record


def test_promote_and_roll_back_follow_the_history(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    for name in ("a.pt", "b.pt", "c.pt"):
        registry.register(weights(tmp_path, name), {})
    assert registry.serving() is None
    with pytest.raises(ValueError, match="none promoted"):
        registry.rollback()
    registry.promote("v1", "first")
    registry.promote("v3", "gate passed")
    assert registry.serving().version == "v3"
    assert registry.rollback().version == "v1"
    assert registry.serving().version == "v1"
    assert registry.pointer()["rolled_back"][0]["version"] == "v3"
    with pytest.raises(ValueError, match="v1 is the first promoted version still in the history"):
        registry.rollback()
    fresh = ModelRegistry(tmp_path / "fresh")
    fresh.register(weights(tmp_path, "a.pt"), {})
    fresh.promote("v1", "first")
    with pytest.raises(ValueError, match="only v1 was ever promoted"):
        fresh.rollback()


def test_watcher_reports_each_new_serving_version_once(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "a.pt"), {})
    registry.register(weights(tmp_path, "b.pt"), {})
    registry.promote("v1", "first")
    watcher = ServingWatcher(registry, interval_s=0)
    assert watcher.current().version == "v1"
    assert watcher.changed() is None
    registry.promote("v2", "better")
    assert watcher.changed().version == "v2"
    assert watcher.changed() is None  # offered: the worker is loading it
    watcher.loaded("v2")
    assert watcher.changed() is None
    registry.rollback()
    assert watcher.changed().version == "v1"


def test_promoting_the_serving_version_again_keeps_the_roll_back_target(tmp_path):
    registry = v2_promoted_after_v1(tmp_path)
    assert registry.promote("v2", "gate passed again").version == "v2"  # a second `gate v2 --promote`
    assert [entry["version"] for entry in registry.pointer()["history"]] == ["v1", "v2"]
    assert registry.rollback().version == "v1"


@pytest.mark.parametrize("version", [3, ["v2"], {"name": "v2"}, True, "../other/v1", "v1/../v1"])
def test_a_pointer_whose_version_is_not_a_name_is_refused_naming_the_file_and_field(tmp_path, version):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "a.pt"), {})
    (registry.root / "serving.json").write_text(json.dumps({"version": version, "history": []}))
    with pytest.raises(ValueError, match=r"serving\.json: field 'version' must be a version name"):
        registry.serving()


@pytest.mark.parametrize("history", [[{"at": 1}], "v1", [["v1"]], [{"version": 1}]])
def test_a_pointer_whose_history_is_not_a_list_of_promotions_is_refused_naming_the_file_and_field(tmp_path, history):
    # The inference stage reads the history at its start, for the versions to serve when the serving one fails.
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "a.pt"), {})
    (registry.root / "serving.json").write_text(json.dumps({"version": "v1", "history": history}))
    with pytest.raises(ValueError, match=r"serving\.json: field 'history' must be a list of promotions"):
        registry.pointer()


@pytest.mark.parametrize("version", ["../other/v1", "v1/../../other/v1", "/other/v1", "v1\n"])
def test_a_version_named_by_a_path_is_refused_and_nothing_outside_the_registry_is_promoted(tmp_path, version):
    """A gate given `../other/v1` would score, promote and serve another registry's model, and the workers would
    load it from there."""
    other = ModelRegistry(tmp_path / "other")
    other.register(weights(tmp_path, "elsewhere.pt"), {})
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "a.pt"), {})
    version = version.replace("/other", str(tmp_path / "other")) if version.startswith("/") else version
    with pytest.raises(KeyError, match="is not a model version name .*registered in .*: v1"):
        registry.get(version)
    with pytest.raises(KeyError, match="is not a model version name"):
        registry.promote(version, "gate passed")
    assert not (registry.root / "serving.json").exists()


def test_a_promotion_decided_against_one_version_is_refused_once_another_serves(tmp_path):
    registry = v2_promoted_after_v1(tmp_path)
    registry.register(weights(tmp_path, "c.pt"), {})
    before = (registry.root / "serving.json").read_text()
    # rolled back since; the site's first model, and another served first
    for gated_against, named in (("v1", "v1"), (None, "no serving model")):
        with pytest.raises(ValueError, match=f"v3 was not promoted: it was compared with {named}, and v2 serves now"):
            registry.promote("v3", "gate passed", replacing=gated_against)
        assert (registry.root / "serving.json").read_text() == before
    assert registry.promote("v3", "gate passed", replacing="v2").version == "v3"
    assert registry.promote("v3", "passed again", replacing="v2").version == "v3"  # serving already: no change


def test_a_pointer_naming_no_version_serves_none(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    (tmp_path / "registry").mkdir()
    (registry.root / "serving.json").write_text(json.dumps({"version": None}))
    assert registry.serving() is None and registry.pointer()["history"] == []


def test_a_roll_back_to_a_version_no_longer_registered_is_refused_and_the_pointer_stays(tmp_path):
    registry = v2_promoted_after_v1(tmp_path)
    before = (registry.root / "serving.json").read_text()
    shutil.rmtree(registry.root / "v1")  # pruned by hand to free disk
    with pytest.raises(ValueError, match="cannot roll back: model version 'v1' is not in .*; v2 still serves"):
        registry.rollback()
    assert (registry.root / "serving.json").read_text() == before


def promote_behind(barrier, root, version: str) -> None:
    barrier.wait()
    ModelRegistry(root).promote(version, "gate passed")


def test_promotions_at_once_each_keep_their_history_entry(tmp_path):
    """Two gates finishing together: each reads the pointer, adds itself and writes it back."""
    processes = multiprocessing.get_context("fork")
    for trial in range(10):
        registry = ModelRegistry(tmp_path / f"registry{trial}")
        for name in ("a.pt", "b.pt", "c.pt"):
            registry.register(weights(tmp_path, name), {})
        registry.promote("v1", "first")
        barrier = processes.Barrier(2)
        promotions = [processes.Process(target=promote_behind, args=(barrier, registry.root, version))
                      for version in ("v2", "v3")]
        for promotion in promotions:
            promotion.start()
        for promotion in promotions:
            promotion.join()
        history = [entry["version"] for entry in registry.pointer()["history"]]
        assert sorted(history) == ["v1", "v2", "v3"] and registry.serving().version == history[-1]


@pytest.mark.parametrize(("record", "says"), [
    ("", "not a run record (Expecting value"),
    ("{}", "field 'weights' must name the model inside"),
    ("[]", "not a run record (a JSON object), got []"),
    ('{"weights": 5}', "field 'weights' must name the model inside"),
    ('{"weights": "/elsewhere/a.pt"}', "field 'weights' must name the model inside"),
    ('{"weights": "../v1/a.pt"}', "field 'weights' must name the model inside"),
    ('{"weights": "."}', "field 'weights' must name the model inside"),
    ('{"weights": "b.pt", "metrics": {"metrics/mAP50(B)": "high"}}', "field 'metrics' must map names to "
                                                                     "numbers"),
    ('{"weights": "b.pt", "parent": 2}', "field 'parent' must be text, not 2"),
    ('{"weights": "b.pt", "weights_sha256": "b.pt"}', "field 'weights_sha256' must be a sha256 in hex, not "
                                                      '"b.pt"'),
])
def test_a_damaged_run_record_is_refused_naming_the_file_and_field(tmp_path, record, says):
    registry = ModelRegistry(tmp_path / "registry")
    for name in ("a.pt", "b.pt"):
        registry.register(weights(tmp_path, name), {})
    (registry.root / "v2" / "run.json").write_text(record)
    with pytest.raises(ValueError, match=re.escape(f"{registry.root / 'v2' / 'run.json'}: {says}")):
        registry.get("v2")
    assert registry.get("v1").weights.read_bytes() == b"a.pt"
