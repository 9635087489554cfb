"""Reads and writes one camera's geometry (zones, calibration, traffic scene) in the site YAML, keeping its comments.

The YAML is edited round-trip (ruamel): mappings and list items that keep their id are updated in place, so the
comments around them stay. The stages read the file with PyYAML (YAML 1.1, where a plain `on` or `no` is a boolean):
new strings that YAML 1.1 would read as anything else are quoted, and the exact text to be written is parsed as the
stages parse it and validated by their configuration model before the file is replaced, so a save can never leave a
configuration the stages would refuse.

Saves are serialised, and each names the version of the camera's geometry it edited: a save made from an older
version than the file's is refused (SceneConflict) instead of undoing the other save.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from infra.files import replace_file

EDITABLE_KEYS = ("zones", "calibration", "scene")
# Editing these changes what a stage computes; the stages read the configuration at start.
RESTART_FOR = {"zones": ["analyze"], "calibration": ["analyze"], "scene": ["analyze", "infer"]}
STRING_TAG = "tag:yaml.org,2002:str"
STAGES_RESOLVER = pyyaml.resolver.Resolver()  # how the stages' loader (PyYAML) types a plain scalar


class SceneError(ValueError):
    """The edited geometry cannot be saved; the text says why."""


class SceneConflict(SceneError):
    """The geometry was saved by someone else since the editor read it."""


def geometry_version(geometry: dict) -> str:
    """Names one state of a camera's editable geometry (as `SceneFile.read` returns it)."""
    return hashlib.sha256(json.dumps(geometry, sort_keys=True).encode()).hexdigest()[:16]


def _yaml() -> YAML:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _plain(node):
    """ruamel's commented containers as plain dicts and lists (for JSON and for validation)."""
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


def _is_point_list(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(item, list) and all(isinstance(x, (int, float)) for x in item) for item in value))


def _commented(value):
    """A new plain value as ruamel nodes: point lists and short number lists in flow style, [[x, y], ...]; strings
    the stages would not read back as strings (`on`, `no`, `010`, `2024-01-01`) quoted."""
    if isinstance(value, str) and STAGES_RESOLVER.resolve(pyyaml.ScalarNode, value, (True, False)) != STRING_TAG:
        return SingleQuotedScalarString(value)
    if isinstance(value, dict):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _commented(item)
        return node
    if isinstance(value, list):
        node = CommentedSeq(_commented(item) for item in value)
        if _is_point_list(value) or all(isinstance(item, (int, float, str)) for item in value):
            node.fa.set_flow_style()
        return node
    return value


def _merge(old, new):
    """`new` written over `old`, reusing old mappings (and list items with the same id) so their comments stay."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [key for key in old if key not in new]:
            del old[key]
        for key, value in new.items():
            old[key] = _merge(old[key], value) if key in old else _commented(value)
        return old
    if (isinstance(old, list) and isinstance(new, list) and all(isinstance(item, dict) for item in new)
            and all(isinstance(item, dict) for item in old)):
        # Only string ids can match (the model requires them); any other id is left for validation to name.
        by_id = {item["id"]: item for item in old if isinstance(item.get("id"), str)}
        merged = [_merge(by_id[item["id"]], item) if isinstance(item.get("id"), str) and item["id"] in by_id
                  else _commented(item) for item in new]
        old[:] = merged
        return old
    if old == new:
        return old  # unchanged: keep the node, and its style
    return _commented(new)


class SceneFile:
    def __init__(self, path: Path, validate: Callable[[dict], object]):
        """`validate(plain_document)` returns the validated configuration, or raises ValueError naming the field."""
        self.path = path
        self.validate = validate
        self.lock = threading.Lock()  # a save reads, edits and replaces the whole file

    def _load(self):
        document = _yaml().load(self.path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("cameras"), list):
            raise SceneError(f"{self.path} has no cameras list")
        return document

    @staticmethod
    def _camera(document, camera_id: str):
        for camera in document["cameras"]:
            if isinstance(camera, dict) and camera.get("id") == camera_id:
                return camera
        raise SceneError(f"camera {camera_id!r} is not in the configuration")

    @staticmethod
    def _geometry(camera) -> dict:
        return {key: _plain(camera.get(key)) for key in EDITABLE_KEYS}

    def read(self, camera_id: str) -> dict:
        """The camera's zones, calibration and scene as written in the file (no defaults filled in)."""
        return self._geometry(self._camera(self._load(), camera_id))

    def write(self, camera_id: str, geometry: dict, version: str) -> tuple[list[str], object]:
        """Validates and saves the geometry edited from `version` (`geometry_version` of what `read` gave); returns
        the stages to restart for the change to take effect (none if unchanged) and the validated configuration
        (None if unchanged)."""
        unknown = sorted(set(geometry) - set(EDITABLE_KEYS))
        if unknown:
            raise SceneError(f"not editable here: {', '.join(unknown)}")
        with self.lock:
            return self._write(camera_id, geometry, version)

    def _write(self, camera_id: str, geometry: dict, version: str) -> tuple[list[str], object]:
        document = self._load()
        camera = self._camera(document, camera_id)
        if geometry_version(self._geometry(camera)) != version:
            raise SceneConflict(f"the scene of camera {camera_id!r} was saved by someone else after this editor "
                                "loaded it: reload it, then make the change again")
        changed = []
        for key in EDITABLE_KEYS:
            if key not in geometry:
                continue
            value = geometry[key]
            if _plain(camera.get(key)) == value:
                continue
            changed.append(key)
            if value is None or value == []:
                camera.pop(key, None)
            elif key in camera:
                camera[key] = _merge(camera[key], value)
            else:
                camera[key] = _commented(value)
        if not changed:
            return [], None
        buffer = io.StringIO()
        _yaml().dump(document, buffer)
        text = buffer.getvalue()
        config = self.validate(pyyaml.safe_load(text))  # the text as the stages will read it
        replace_file(self.path, text)
        return sorted({stage for key in changed for stage in RESTART_FOR[key]}), config
