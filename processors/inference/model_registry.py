"""The model registry: each trained or imported model in a numbered version folder, and a pointer to the serving one.

<root>/<version>/ holds the model (a .pt file or an export folder, under its own name) and run.json (how it was
made: data hash, base weights, settings, metrics, parent version; the sha256 of the model as registered, which a
version is checked against before it is served). <root>/serving.json names the serving version and the promotions
before it, so a roll-back is one step back in that history. The pointer is replaced through a temporary file and a
rename, so an inference worker polling it never reads half of one; promotions and roll-backs hold a lock beside it
while they read, change and replace it.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from infra.backoff import Pause
from infra.files import locked, replace_file, sync_tree

VERSION_PATTERN = re.compile(r"^v(\d+)$")
RUN_FILE = "run.json"
POINTER_FILE = "serving.json"
DIGEST_FIELD = "weights_sha256"  # in the run record: weights_digest of the model as registered
WHATEVER_SERVES = object()  # promote's `replacing` when the promotion does not depend on the model it replaces


@dataclass(frozen=True)
class ModelVersion:
    version: str
    weights: Path  # what ultralytics loads: a .pt/.onnx file or an *_openvino_model folder
    run: dict

    def check_unchanged(self) -> None:
        """Raises WeightsChanged where the model's files are no longer those registered (edited, truncated or
        replaced since), OSError where they cannot be read. A version registered before its run record held their
        digest is taken as it is."""
        recorded = self.run.get(DIGEST_FIELD)
        if recorded is not None and weights_digest(self.weights) != recorded:
            raise WeightsChanged(f"{self.weights}: the files of {self.version} changed since it was registered "
                                 f"(their sha256 is not the {DIGEST_FIELD} of its {RUN_FILE})")


class WeightsChanged(ValueError):
    """A registry version's model is not the one registered as it."""


def write_json_atomically(path: Path, data: dict) -> None:
    replace_file(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in self.root.iterdir()
                 if p.is_dir() and (m := VERSION_PATTERN.match(p.name)) and (p / RUN_FILE).exists()]
        return [name for _, name in sorted(found)]

    def holding(self, weights: Path) -> str | None:
        """The registered version whose model is byte for byte `weights` (a file or an exported model's folder)."""
        digest = weights_digest(Path(weights))
        for version in self.versions():
            try:
                if weights_digest(self.get(version).weights) == digest:
                    return version
            except OSError:  # a version whose files were pruned holds nothing to compare
                continue
        return None

    def get(self, version: str) -> ModelVersion:
        if not (isinstance(version, str) and VERSION_PATTERN.fullmatch(version)):  # a path would leave the registry
            raise KeyError(f"{version!r} is not a model version name (v1, v2, ...; registered in {self.root}: "
                           f"{', '.join(self.versions()) or 'none'})")
        folder = self.root / version
        path = folder / RUN_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            known = ", ".join(self.versions()) or "none"
            raise KeyError(f"model version {version!r} is not in {self.root} (registered: {known})") from None
        try:
            run = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not a run record ({exc}); restore it from a backup") from None
        return ModelVersion(version, folder / checked_run(run, path)["weights"], run)

    def register(self, weights: Path, run: dict) -> ModelVersion:
        """Copies the model into the next version folder with its run record; returns the new version."""
        weights = Path(weights)
        if not weights.exists():
            raise FileNotFoundError(f"model {weights} does not exist")
        self.root.mkdir(parents=True, exist_ok=True)
        while True:  # mkdir is the lock: two registrations never take the same number
            taken = [int(VERSION_PATTERN.match(p.name).group(1)) for p in self.root.iterdir()
                     if VERSION_PATTERN.match(p.name)]
            version = f"v{max(taken, default=0) + 1}"
            try:
                (self.root / version).mkdir()
                break
            except FileExistsError:
                continue
        target = self.root / version / weights.name
        if weights.is_dir():
            shutil.copytree(weights, target)
        else:
            shutil.copyfile(weights, target)
        sync_tree(target)  # on disk before the run record that makes the version complete
        record = {**run, "version": version, "weights": weights.name, DIGEST_FIELD: weights_digest(target),
                  "registered_at": run.get("registered_at", time.time())}
        write_json_atomically(self.root / version / RUN_FILE, record)  # written last: the version is complete
        return ModelVersion(version, target, record)

    def pointer(self) -> dict:
        path = self.root / POINTER_FILE
        if not path.exists():
            return {"version": None, "history": []}
        try:
            pointer = json.loads(path.read_text())
            version = pointer["version"]
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"{path}: not a serving pointer ({exc}); restore it, or delete it and promote again"
            raise ValueError(problem) from None
        if version is not None and not (isinstance(version, str) and VERSION_PATTERN.fullmatch(version)):
            raise ValueError(f"{path}: field 'version' must be a version name such as \"v2\" or null, not "
                             f"{json.dumps(version)}; restore it, or delete it and promote again")
        history = pointer.get("history", [])
        if not (isinstance(history, list) and all(isinstance(entry, dict) and isinstance(entry.get("version"), str)
                                                  for entry in history)):
            raise ValueError(f"{path}: field 'history' must be a list of promotions, each with its 'version'; "
                             "restore it, or delete it and promote again")
        return {**pointer, "history": history}

    def serving(self) -> ModelVersion | None:
        version = self.pointer()["version"]
        return self.get(version) if version else None

    def promote(self, version: str, reason: str, replacing: str | None | object = WHATEVER_SERVES) -> ModelVersion:
        """Makes `version` the serving model; the one before stays in the history for roll-back. Promoting the
        version already serving changes nothing: a second entry for it would make a roll-back return to it.
        `replacing` is the version the promotion was decided against (None: none served); when another serves by
        the time the pointer is locked (promoted or rolled back meanwhile), ValueError and the pointer unchanged."""
        model = self.get(version)
        model.check_unchanged()  # the workers would refuse it and go on serving what it was to replace
        with locked(self.root / POINTER_FILE):
            pointer = self.pointer()
            if pointer["version"] == version:
                return model
            if replacing is not WHATEVER_SERVES and pointer["version"] != replacing:
                raise ValueError(f"{version} was not promoted: it was compared with {replacing or 'no serving model'}, "
                                 f"and {pointer['version'] or 'none'} serves now (promoted or rolled back since)")
            history = [*pointer["history"], {"version": version, "promoted_at": time.time(), "reason": reason}]
            write_json_atomically(self.root / POINTER_FILE, {"version": version, "history": history})
        return model

    def rollback(self) -> ModelVersion:
        """Serves the version promoted before the current one again; refused, the pointer unchanged, when that
        version is no longer registered."""
        with locked(self.root / POINTER_FILE):
            pointer = self.pointer()
            history = pointer["history"]
            if len(history) < 2:
                if not history:
                    promoted = "none promoted"
                elif pointer.get("rolled_back"):
                    promoted = f"{history[-1]['version']} is the first promoted version still in the history"
                else:
                    promoted = f"only {history[-1]['version']} was ever promoted"
                raise ValueError(f"nothing to roll back to in {self.root}: {promoted}")
            history = history[:-1]
            try:
                model = self.get(history[-1]["version"])
                model.check_unchanged()  # the workers would refuse it and go on serving the one rolled back from
            except KeyError as exc:
                raise ValueError(f"cannot roll back: {exc.args[0]}; {pointer['version']} still serves") from None
            except (WeightsChanged, OSError) as exc:
                raise ValueError(f"cannot roll back: {exc}; {pointer['version']} still serves") from None
            write_json_atomically(self.root / POINTER_FILE, {
                "version": model.version, "history": history,
                "rolled_back": [*pointer.get("rolled_back", []), {"version": pointer["version"], "at": time.time()}]})
        return model


def checked_run(run, path: Path) -> dict:
    """`run`, a version's run record read from `path`, once its fields are found usable: ValueError naming the file
    and field otherwise. The weights must lie inside the version's folder, so that promoting a version serves
    only what was registered as it."""
    if not isinstance(run, dict):
        raise ValueError(f"{path}: not a run record (a JSON object), got {json.dumps(run)[:80]}")
    weights = run.get("weights")
    folder = path.parent.resolve()
    target = (folder / weights).resolve() if isinstance(weights, str) else None
    if target is None or target == folder or not target.is_relative_to(folder):
        raise ValueError(f"{path}: field 'weights' must name the model inside {path.parent}, not "
                         f"{json.dumps(weights)}")
    digest = run.get(DIGEST_FIELD)
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ValueError(f"{path}: field {DIGEST_FIELD!r} must be a sha256 in hex, not {json.dumps(digest)[:80]}")
    for name in ("kind", "note", "parent", "data", "data_hash"):
        if not isinstance(run.get(name), str | None):
            raise ValueError(f"{path}: field {name!r} must be text, not {json.dumps(run[name])[:80]}")
    metrics = run.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(value, int | float) and not isinstance(value, bool)
                                                for value in metrics.values()):
        raise ValueError(f"{path}: field 'metrics' must map names to numbers, not {json.dumps(metrics)[:80]}")
    return run


class ServingWatcher:
    """Tells a long-running worker when the serving pointer names another version than the one it runs (read at
    most every `interval_s`: one small file).

    A version counts as running only once the worker says it loaded it (`loaded`): one that failed to load (out of
    memory beside the old model, weights still being copied) is offered again after a doubling pause (`failed`), so
    a passing fault heals and a broken model is not reloaded without end."""

    def __init__(self, registry: ModelRegistry, interval_s: float = 2.0, retry_initial_s: float = 5.0,
                 retry_max_s: float = 300.0):
        self.registry = registry
        self.interval_s = interval_s
        self.checked_at = float("-inf")
        self.version: str | None = None  # the version the worker runs
        self.offered: str | None = None  # handed out by changed(), its load not yet reported
        self.failing: str | None = None  # the version whose loads keep failing, paused by `retry`
        self.retry = Pause(retry_initial_s, retry_max_s)

    def current(self) -> ModelVersion | None:
        """The serving version now (also remembered as running: the worker loads it before it starts)."""
        model = self.registry.serving()
        self.version = model.version if model else None
        self.checked_at = time.monotonic()
        return model

    def changed(self) -> ModelVersion | None:
        """The newly serving version to load, if the pointer names another one than the worker runs; offered once,
        and again after a failed load only once its pause is over."""
        now = time.monotonic()
        if now - self.checked_at < self.interval_s:
            return None
        self.checked_at = now
        version = self.registry.pointer()["version"]
        if version is None or version in (self.version, self.offered):
            return None
        if version == self.failing and self.retry.remaining(now) > 0:
            return None
        model = self.registry.get(version)
        self.offered = version
        return model

    def still_serving(self, version: str) -> bool:
        """Whether the pointer still names `version`, offered earlier; when it no longer does, the offer is withdrawn
        and the next `changed` compares the pointer with the version the worker runs. An unreadable pointer changes
        nothing: the load goes on as offered."""
        try:
            serving = self.registry.pointer()["version"]
        except (OSError, ValueError, KeyError):
            return True
        if serving != version:
            self.offered = None
        return serving == version

    def loaded(self, version: str | None) -> None:
        """Records the version the worker runs now (None: a model outside the registry)."""
        self.version, self.offered = version, None
        if version == self.failing:
            self.failing = None
            self.retry.succeeded()

    def failed(self, version: str) -> float:
        """Records a failed load of `version`; returns the seconds until it is offered again."""
        self.offered = None
        if version != self.failing:
            self.failing = version
            self.retry.succeeded()  # another version's failures say nothing about this one
        return self.retry.failed(time.monotonic())


def weights_digest(path: Path) -> str:
    """sha256 of a weights file's bytes, or of an exported model's folder (its files' relative paths and bytes)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
