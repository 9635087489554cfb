"""The swapper loads a newly promoted model beside the serving one and hands it over once, between batches; a worker
starting on a serving version that does not load serves the one before it meanwhile."""
import json
import logging
import shutil
import threading

import pytest
import yaml

from cityguard.stages import model_swapper, serving_detectors, version_detectors
from processors.inference.model_registry import ModelRegistry, ServingWatcher, WeightsChanged
from processors.inference.model_swap import ModelSwapper
from schemas.settings.config import Config
from tests.conftest import OFFLINE_MODEL, VTEST


def registry_with(tmp_path, count: int) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    for index in range(count):
        path = tmp_path / f"m{index}.pt"
        path.write_bytes(b"x")
        registry.register(path, {})
    registry.promote("v1", "first")
    return registry


def held_swapper(registry: ModelRegistry) -> tuple[ModelSwapper, threading.Event]:
    """A swapper serving the registry's version now, whose loads finish once the event is set."""
    release = threading.Event()

    def load(model):
        release.wait(5)
        return f"detector for {model.version}"

    watcher = ServingWatcher(registry, interval_s=0)
    watcher.current()
    return ModelSwapper(watcher, load), release


def test_a_promotion_is_loaded_in_the_background_and_handed_over_once(tmp_path):
    registry = registry_with(tmp_path, 2)
    swapper, release = held_swapper(registry)
    assert swapper.poll() is None
    registry.promote("v2", "gate passed")
    assert swapper.poll() is None  # loading: the old model keeps serving
    assert swapper.poll() is None
    release.set()
    swapper.loading.join(5)
    model, loaded = swapper.poll()
    assert (model.version, loaded) == ("v2", "detector for v2")
    assert swapper.poll() is None


def test_a_model_rolled_back_while_it_loads_is_never_served(tmp_path):
    registry = registry_with(tmp_path, 3)
    swapper, release = held_swapper(registry)
    registry.promote("v2", "gate passed")
    assert swapper.poll() is None  # v2 loading
    registry.rollback()  # v1 serves again before v2 is loaded
    release.set()
    swapper.loading.join(5)
    assert swapper.poll() is None and swapper.poll() is None  # v1 runs already: nothing to load or serve
    registry.promote("v3", "gate passed")
    swapper.poll()
    swapper.loading.join(5)
    model, _ = swapper.poll()
    assert model.version == "v3"


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(tmp_path, caplog):
    registry = registry_with(tmp_path, 2)

    def load(model):
        raise RuntimeError("corrupt weights")

    watcher = ServingWatcher(registry, interval_s=0)
    watcher.current()
    swapper = ModelSwapper(watcher, load)
    registry.promote("v2", "gate passed")
    swapper.poll()
    swapper.loading.join(5)
    assert swapper.poll() is None
    assert "v2 could not be loaded" in caplog.text


def test_a_promotion_whose_files_changed_since_is_refused_in_one_line(tmp_path, caplog):
    registry = registry_with(tmp_path, 2)

    def load(model):
        model.check_unchanged()  # as the stage's loader does first (version_detector)
        return f"detector for {model.version}"

    watcher = ServingWatcher(registry, interval_s=0)
    watcher.current()
    swapper = ModelSwapper(watcher, load)
    registry.promote("v2", "gate passed")
    registry.get("v2").weights.write_bytes(b"edited after the gate")
    swapper.poll()
    swapper.loading.join(5)
    assert swapper.poll() is None
    (line,) = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert "model v2 is not served: " in line.getMessage() and "the files of v2 changed" in line.getMessage()
    assert line.exc_info is None  # the line says it all: no traceback


def test_a_damaged_pointer_keeps_the_current_model_until_it_is_repaired(tmp_path, caplog):
    registry = registry_with(tmp_path, 2)
    watcher = ServingWatcher(registry, interval_s=0)
    watcher.current()
    swapper = ModelSwapper(watcher, lambda model: model.version)
    pointer = registry.root / "serving.json"
    pointer.write_text("{half a pointer")
    assert swapper.poll() is None and swapper.poll() is None
    assert caplog.text.count("pointer unreadable") == 1
    pointer.unlink()
    registry.promote("v2", "repaired")
    swapper.poll()
    swapper.loading.join(5)
    assert swapper.poll()[1] == "v2"


def test_a_pointer_with_a_number_for_its_version_keeps_the_current_model(tmp_path, caplog):
    registry = registry_with(tmp_path, 2)
    watcher = ServingWatcher(registry, interval_s=0)
    watcher.current()
    swapper = ModelSwapper(watcher, lambda model: model.version)
    (registry.root / "serving.json").write_text('{"version": 3, "history": []}')
    assert swapper.poll() is None
    assert "pointer unreadable" in caplog.text and "field 'version'" in caplog.text


def test_a_model_that_failed_to_load_is_tried_again_after_a_pause_and_then_served(tmp_path, monkeypatch):
    registry = registry_with(tmp_path, 2)
    now = [1000.0]
    monkeypatch.setattr("processors.inference.model_registry.time.monotonic", lambda: now[0])
    attempts = []

    def load(model):
        attempts.append(model.version)
        if len(attempts) < 3:
            raise RuntimeError("CUDA out of memory")  # passing: there is room once the old model's batch is done
        return f"detector for {model.version}"

    watcher = ServingWatcher(registry, interval_s=0, retry_initial_s=5, retry_max_s=60)
    watcher.current()
    swapper = ModelSwapper(watcher, load)
    registry.promote("v2", "gate passed")

    def poll():
        swapped = swapper.poll()
        if swapper.loading is not None:
            swapper.loading.join(5)
        return swapped or swapper.poll()

    assert poll() is None and attempts == ["v2"]
    now[0] += 4.9
    assert poll() is None and attempts == ["v2"]  # a broken model is not reloaded on every batch
    now[0] += 0.2
    assert poll() is None and attempts == ["v2", "v2"]
    now[0] += 5.0
    assert poll() is None and attempts == ["v2", "v2"]  # the pause doubles: 10 s after the second failure
    now[0] += 5.1
    model, loaded = poll()
    assert (model.version, loaded, attempts) == ("v2", "detector for v2", ["v2"] * 3)
    assert watcher.version == "v2" and poll() is None


def test_a_worker_whose_serving_version_does_not_load_starts_on_the_one_before_and_tries_it_again(tmp_path, caplog):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(OFFLINE_MODEL, {"kind": "imported"})
    damaged = tmp_path / "damaged" / OFFLINE_MODEL.name  # weights spoilt after the gate passed them
    shutil.copytree(OFFLINE_MODEL, damaged)
    for part in damaged.glob("*.xml"):
        part.write_text("not a model")
    registry.register(damaged, {"kind": "imported"})
    registry.promote("v1", "first model")
    registry.promote("v2", "gate passed")
    config = Config.model_validate({"model": {"offline_weights": str(OFFLINE_MODEL), "registry": str(registry.root)}})

    swapper = model_swapper(config)
    detectors = serving_detectors(config, swapper)
    assert detectors.version == "v1"
    assert "model v2 could not be loaded" in caplog.text and "serving v1 until it does" in caplog.text
    assert swapper.watcher.version == "v1" and swapper.watcher.failing == "v2"  # offered again after its pause

    only_damaged = ModelRegistry(tmp_path / "only-damaged")
    only_damaged.register(damaged, {"kind": "imported"})
    only_damaged.promote("v1", "first model")
    config = Config.model_validate({"model": {"offline_weights": str(OFFLINE_MODEL),
                                              "registry": str(only_damaged.root)}})
    swapper = model_swapper(config)
    detectors = serving_detectors(config, swapper)
    assert detectors.version is None  # the configured model
    assert swapper.watcher.version is None and swapper.watcher.failing == "v1"  # offered again after its pause


def test_the_checks_before_the_start_try_the_models_the_worker_tries_when_the_serving_one_is_gone(tmp_path, capsys):
    """A promoted version whose weights were deleted since: the worker serves the version before it, so `up` must not
    refuse the site for it, and check-config names it with what serves instead and reads that model's classes."""
    from cityguard.cli import main
    from cityguard.start_checks import model_class_names, start_problems
    from processors.inference.backends.registry import model_candidates
    from schemas.settings.config import parse_config

    registry = ModelRegistry(tmp_path / "registry")
    served_before = registry.register(OFFLINE_MODEL, {"kind": "imported"})
    gone = registry.register(OFFLINE_MODEL, {"kind": "imported"})
    registry.promote("v1", "first model")
    registry.promote("v2", "gate passed")
    shutil.rmtree(gone.weights)
    site = {"cameras": [{"id": "walk", "source": str(VTEST)}],
            "model": {"weights": "models/gone.pt", "offline_weights": None, "registry": "registry"}}
    config = parse_config(site, tmp_path)

    assert [candidate.setting for candidate in model_candidates(config)] == [
        "model.registry (serving v2)", "model.registry (v1)", "model.weights"]
    assert start_problems(config) == []
    assert model_class_names(config)[0] == served_before.weights
    assert serving_detectors(config, model_swapper(config)).version == "v1"

    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    assert main(["check-config", "--config", str(tmp_path / "site.yaml")]) == 0
    assert capsys.readouterr().err == (f"cityguard: warning: model.registry (serving v2): {gone.weights} does not "
                                       "exist: v1 serves instead until it is back\n")

    # With no version that loads, the configured model is the one loaded, and the one the checks look for.
    shutil.rmtree(served_before.weights)
    assert start_problems(config) == [f"model.weights: {tmp_path / 'models' / 'gone.pt'} does not exist"]


def test_the_checks_before_the_start_and_the_worker_pass_over_a_version_whose_files_changed(tmp_path, capsys, caplog):
    """v2's OpenVINO weights truncated after it was registered: its metadata.yaml still reads, so only the digest its
    run record holds tells it from the model the gate passed."""
    from cityguard.cli import main
    from cityguard.start_checks import model_class_names, start_problems
    from schemas.settings.config import parse_config

    registry = ModelRegistry(tmp_path / "registry")
    served_before = registry.register(OFFLINE_MODEL, {"kind": "imported"})
    changed = registry.register(OFFLINE_MODEL, {"kind": "imported"})
    registry.promote("v1", "first model")
    registry.promote("v2", "gate passed")
    weights_file = next(changed.weights.glob("*.bin"))
    weights_file.write_bytes(weights_file.read_bytes()[:weights_file.stat().st_size // 2])
    site = {"cameras": [{"id": "walk", "source": str(VTEST)}],
            "model": {"weights": "models/gone.pt", "offline_weights": None, "registry": "registry"}}
    config = parse_config(site, tmp_path)

    assert start_problems(config) == []
    assert model_class_names(config)[0] == served_before.weights
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    assert main(["check-config", "--config", str(tmp_path / "site.yaml")]) == 0
    says = (f"{changed.weights}: the files of v2 changed since it was registered (their sha256 is not the "
            "weights_sha256 of its run.json)")
    assert capsys.readouterr().err == (f"cityguard: warning: model.registry (serving v2): {says}: v1 serves instead "
                                       "until it is back\n")

    swapper = model_swapper(config)
    assert serving_detectors(config, swapper).version == "v1"
    assert f"model v2 could not be loaded (WeightsChanged: {says}); serving v1 until it does" in caplog.text
    assert swapper.watcher.failing == "v2"  # offered again after its pause


def test_a_worker_serves_a_version_only_with_the_files_registered_as_it(tmp_path, caplog):
    """Files edited so that they still load (a class renamed in metadata.yaml) are not the model the gate passed: the
    worker starts on the version before and a hot swap refuses them. A version unchanged, and one registered before
    its record held the digest, are served."""
    registry = ModelRegistry(tmp_path / "registry")
    for _ in range(2):
        registry.register(OFFLINE_MODEL, {"kind": "imported"})
    registry.promote("v1", "first model")
    registry.promote("v2", "gate passed")
    config = Config.model_validate({"model": {"offline_weights": str(OFFLINE_MODEL), "registry": str(registry.root)}})
    assert serving_detectors(config).version == "v2"

    metadata = registry.get("v2").weights / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("0: person", "0: pedestrian"))
    assert serving_detectors(config).version == "v1"
    assert "model v2 could not be loaded (WeightsChanged: " in caplog.text
    with pytest.raises(WeightsChanged, match="the files of v2 changed since it was registered"):
        version_detectors(config, registry.get("v2"))

    record = registry.root / "v2" / "run.json"
    run = json.loads(record.read_text())
    del run["weights_sha256"]
    record.write_text(json.dumps(run))
    detectors = serving_detectors(config)
    assert detectors.version == "v2" and detectors.detector.names[0] == "pedestrian"
