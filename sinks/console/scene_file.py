"""Reads and writes one camera's geometry (zones, calibration, traffic scene) in the site YAML, keeping its comments;
`SceneFile.edit` makes any other change to the file the same way (`cityguard cameras discover` adds cameras).

The YAML is edited round-trip (ruamel): mappings and list items that keep their id are updated in place, so the
comments around them stay. A node that is shared with another place of the file (an anchor's aliases, or the
mappings that take its values with a merge key `<<: *x`), or that must lose a value it takes through a merge key,
is first replaced by a copy of its own with every value written out, so the edit reaches this camera only and says
what it says. The stages read the file with PyYAML (YAML 1.1, where a plain `on` or `no` is a boolean): new strings
that YAML 1.1 would read as anything else are quoted, and the exact text to be written is parsed as the stages parse
it and validated by their configuration model before the file is replaced, so a save can never leave a
configuration the stages would refuse.

Saves take turns under a lock file beside the site file, which every writer of it takes (each console, `cityguard
calibrate --write`, `cityguard cameras discover`), and each names the version of the camera's geometry it edited: a save
made from an older version than the file's is refused (SceneConflict) instead of undoing the other save.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import Comment, CommentedMap, CommentedSeq, Format, merge_attrib
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from infra.files import locked, replace_file
from schemas.settings.base import ConfigError
from schemas.settings.config import Config, parse_config, read_config_file

EDITABLE_KEYS = ("zones", "calibration", "scene")
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


def as_yaml_nodes(value):
    """A new plain value as ruamel nodes: point lists and short number lists in flow style, [[x, y], ...]; strings
    the stages would not read back as strings (`on`, `no`, `010`, `2024-01-01`) quoted."""
    if isinstance(value, str) and STAGES_RESOLVER.resolve(pyyaml.ScalarNode, value, (True, False)) != STRING_TAG:
        return SingleQuotedScalarString(value)
    if isinstance(value, dict):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = as_yaml_nodes(item)
        return node
    if isinstance(value, list):
        node = CommentedSeq(as_yaml_nodes(item) for item in value)
        if _is_point_list(value) or all(isinstance(item, (int, float, str)) for item in value):
            node.fa.set_flow_style()
        return node
    return value


def stages_to_restart(before: dict, after: dict, density_maps: bool) -> list[str]:
    """The stages, as `cityguard up` names them, that read at their start something of the camera's geometry that
    changed between `before` and `after` (as `SceneFile.read` gives them): the analyzer reads all of it; inference
    which cameras get density maps (those with crowd zones, when the density model runs) and which keep a
    background model (those with a traffic scene); the metrics sink which zones and counting lines (with their lane
    and direction names) it exports."""
    def infer_reads(geometry: dict):
        return density_maps and bool(geometry["zones"]), geometry["scene"] is not None

    def metrics_reads(geometry: dict):
        zones = {str(zone.get("id")) for zone in geometry["zones"] or [] if isinstance(zone, dict)}
        scene = geometry["scene"] if isinstance(geometry["scene"], dict) else {}
        lines = {tuple(str(line.get(key)) for key in ("id", "lane", "forward", "backward"))
                 for line in scene.get("counting_lines") or [] if isinstance(line, dict)}
        return zones, lines

    reads = {"analyze": lambda geometry: geometry, "infer": infer_reads, "export-metrics": metrics_reads}
    return [stage for stage, read in reads.items() if read(before) != read(after)]


def _shared_nodes(document) -> set[int]:
    """The ids of the mappings and lists found at more than one place of the document: an anchored node and its
    aliases, a merge key's source (its values show in every mapping that merges it) and the values merged."""
    seen: set[int] = set()
    shared: set[int] = set()
    pending = [document]
    while pending:
        node = pending.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            pending += getattr(node, merge_attrib, [])
            pending += node.values()
        else:
            pending += node
    return shared


def _own_copy(node):
    """A copy of a mapping or list with every value written out (those taken through a merge key too), its comments
    and flow style kept, no anchor: editing it changes nothing else in the document."""
    if isinstance(node, dict):
        copy = CommentedMap()
        for key, value in node.items():
            copy[key] = _own_copy(value)
    elif isinstance(node, list):
        copy = CommentedSeq(_own_copy(value) for value in node)
    else:
        return node
    for attribute in (Comment.attrib, Format.attrib):
        if hasattr(node, attribute):
            setattr(copy, attribute, deepcopy(getattr(node, attribute)))
    return copy


def _mapping_values(node, seen: set[int] | None = None):
    """(mapping, key, value) for each key of each mapping, in the order written, which is the order ruamel writes them
    in: a node is written where it is met first (with its anchor), and an alias where it is met again, which is not
    entered again. Keys taken through a merge key are the source's."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    for key, value in enumerate(node) if isinstance(node, list) else node.non_merged_items():
        if isinstance(node, dict):
            yield node, key, value
        if isinstance(value, (dict, list)):
            yield from _mapping_values(value, seen)


def _collection_values(document):
    """The (mapping, key, value) of `_mapping_values` whose value is a mapping or list."""
    return ((mapping, key, value) for mapping, key, value in _mapping_values(document)
            if isinstance(value, (dict, list)))


def _shareable(value) -> bool:
    """Whether other places of the document may hold this very value: a mapping, a list or an anchored scalar."""
    return isinstance(value, (dict, list)) or getattr(getattr(value, "anchor", None), "value", None) is not None


def _without(comments: list | None, taken: set[int]) -> list | None:
    kept = [comment for comment in comments or () if id(comment) not in taken]
    return kept or None


def _anchor_comments_on_key_lines(document) -> None:
    """ruamel reads the comment after an anchor (`calibration: &survey  # from the 2024 plan`) as the first comment
    inside the node, which it writes back on a line of its own, indented as far as it stood, and gives it to the
    mappings holding an alias of the node too. It is made the end-of-line comment of its key instead, and taken from
    the node and the aliases: it is written back where it stood, and no copy of the node carries it elsewhere."""
    taken: set[int] = set()
    for mapping, key, _ in _collection_values(document):
        slots = mapping.ca.items.get(key)  # [key's comments..., the value's end-of-line comment, comments before it]
        if slots and slots[2] is None and slots[3] and slots[3][0].start_mark.line == mapping.lc.key(key)[0]:
            slots[2] = slots[3][0]
            taken.add(id(slots[2]))
    for mapping, key, value in _collection_values(document):
        slots = mapping.ca.items.get(key)
        if slots:
            slots[3] = _without(slots[3], taken)
        if value.ca.comment:
            value.ca.comment[1] = _without(value.ca.comment[1], taken)


def _alias_comments_as_at_anchor(document) -> None:
    """ruamel writes a node with the comments that the last mapping holding it gives it, though the node shows at the
    first place only (the others hold an alias): each other place gives it those of the first. ruamel also reads an
    alias's key with the anchor's comments, so where an edit gave that place a value of its own, or moved the node's
    first place, a comment would be written twice (and one above a list's first item breaks the layout the second
    time): a comment already written at an earlier place is dropped."""
    first: dict[int, list] = {}  # a shareable value -> the comments its first place gives it
    written: set[int] = set()  # the comments of the places met so far
    for mapping, key, value in _mapping_values(document):
        slots = mapping.ca.items.get(key)
        if _shareable(value) and id(value) in first:
            if slots:
                slots[2:] = first[id(value)]
            continue
        if slots:
            slots[2:] = [None if id(slots[2]) in written else slots[2], _without(slots[3], written)]
            written.update(id(comment) for comment in [slots[2], *(slots[3] or ())] if comment is not None)
        if _shareable(value):
            own = value.ca.comment if isinstance(value, (dict, list)) else None  # a scalar keeps none of its own
            first[id(value)] = slots[2:] if slots else (own or [None, None])[:2]


class _Merge:
    """Writes new plain values over a document's nodes, reusing the old mappings (and list items with the same id)
    so their comments stay, without reaching any other place of the document through an anchor or merge key."""

    def __init__(self, document):
        self.shared = _shared_nodes(document)
        self.written_out: list[str] = []  # where a shared or merged node was replaced by a copy of its own

    def _own(self, node, where: str, removed=()):
        """The node itself where editing it in place reaches nothing else; otherwise its own copy."""
        # A key removed from a mapping with a merge key would come back from the merge's source.
        if id(node) in self.shared or (removed and getattr(node, merge_attrib, None)):
            self.written_out.append(where)
            return _own_copy(node)
        return node

    def __call__(self, old, new, where: str):
        """`new` written over `old`; `where` names the node for the answer (camera.key.item)."""
        if _plain(old) == new:
            return old  # unchanged: keep the node, its style and whatever shares it
        if isinstance(old, dict) and isinstance(new, dict):
            removed = [key for key in old if key not in new]
            old = self._own(old, where, removed)
            for key in removed:
                del old[key]
            for key, value in new.items():
                if key not in old:
                    old[key] = as_yaml_nodes(value)
                elif _plain(old[key]) != value:
                    old[key] = self(old[key], value, f"{where}.{key}")
            return old
        if (isinstance(old, list) and isinstance(new, list) and all(isinstance(item, dict) for item in new)
                and all(isinstance(item, dict) for item in old)):
            old = self._own(old, where)
            # Only string ids can match (the model requires them); any other id is left for validation to name.
            by_id = {item["id"]: item for item in old if isinstance(item.get("id"), str)}
            old[:] = [self(by_id[item["id"]], item, f"{where}.{item['id']}")
                      if isinstance(item.get("id"), str) and item["id"] in by_id else as_yaml_nodes(item)
                      for item in new]
            return old
        return as_yaml_nodes(new)


@dataclass(frozen=True)
class Saved:
    """What a save did."""

    restart: list[str]  # the stages to restart for the change to take effect; empty when nothing changed
    config: Config | None  # the validated configuration written; None when nothing changed
    written_out: list[str]  # edited nodes that were shared through an anchor or merge key and now stand alone


class SceneFile:
    """A site file whose cameras' zones, calibration and scene are edited in place (the console's scene editor,
    `cityguard calibrate --write`), or which `edit` changes otherwise (`cityguard cameras discover`)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _locked(self):
        """A save reads, edits and replaces the whole file; locked beside the file a link names, which is replaced."""
        return locked(self.path.resolve())

    def validate(self, document: dict) -> Config:
        """The configuration a plain document makes, as the stages will read this file; ValueError naming the field."""
        try:
            return parse_config(document, self.path.resolve().parent, str(self.path))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def _load(self, cameras_required: bool = True):
        """The document, and the line ending the file uses (a file edited on Windows keeps its CRLF)."""
        if not cameras_required and not self.path.exists():
            return CommentedMap(), "\n"
        try:
            read_config_file(self.path)  # as the stages read it: a typo, a repeated key, no file, named in one line
            raw = self.path.read_bytes()
            document = _yaml().load(raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n"))
        except ConfigError as exc:
            raise SceneError(str(exc)) from None
        except OSError as exc:  # gone since the line above
            raise SceneError(f"cannot read configuration {self.path}: {exc.strerror}") from None
        except (YAMLError, UnicodeDecodeError) as exc:  # changed since the line above
            raise SceneError(f"configuration {self.path} cannot be read: {str(exc).splitlines()[0]}") from None
        if not isinstance(document, dict) or (cameras_required and not isinstance(document.get("cameras"), list)):
            raise SceneError(f"{self.path} has no cameras list")
        return document, "\r\n" if b"\r\n" in raw[:raw.find(b"\n") + 1] else "\n"

    @staticmethod
    def _camera(document, camera_id: str) -> int:
        """The camera's position in the cameras list."""
        for position, camera in enumerate(document["cameras"]):
            if isinstance(camera, dict) and camera.get("id") == camera_id:
                return position
        raise SceneError(f"camera {camera_id!r} is not in the configuration")

    @staticmethod
    def _geometry(camera) -> dict:
        return {key: _plain(camera.get(key)) for key in EDITABLE_KEYS}

    def read(self, camera_id: str) -> dict:
        """The camera's zones, calibration and scene as written in the file (no defaults filled in)."""
        document, _ = self._load()
        return self._geometry(document["cameras"][self._camera(document, camera_id)])

    def write(self, camera_id: str, geometry: dict, version: str) -> Saved:
        """Validates and saves the geometry edited from `version` (`geometry_version` of what `read` gave)."""
        unknown = sorted(set(geometry) - set(EDITABLE_KEYS))
        if unknown:
            raise SceneError(f"not editable here: {', '.join(unknown)}")
        with self._locked():
            return self._write(camera_id, geometry, version)

    def _write(self, camera_id: str, geometry: dict, version: str) -> Saved:
        document, newline = self._load()
        _anchor_comments_on_key_lines(document)
        cameras = document["cameras"]
        position = self._camera(document, camera_id)
        before = self._geometry(cameras[position])
        if geometry_version(before) != version:
            raise SceneConflict(f"the scene of camera {camera_id!r} was saved by someone else after this editor "
                                "loaded it: reload it, then make the change again")
        # A blank key (null or an empty list) is left out of the file.
        edited = {key: value for key, value in {**_plain(cameras[position]), **geometry}.items()
                  if key not in EDITABLE_KEYS or value not in (None, [])}
        merge = _Merge(document)
        cameras[position] = merge(cameras[position], edited, camera_id)
        after = self._geometry(cameras[position])
        if after == before:
            return Saved([], None, [])
        config = self._save(document, newline)
        return Saved(stages_to_restart(before, after, config.analytics.density_model.enabled), config,
                     merge.written_out)

    def edit(self, change: Callable[[CommentedMap], None]) -> Config:
        """Applies `change` to the whole document, round-trip (values it adds made with `as_yaml_nodes`), and saves
        it as `write` does; a file that does not exist yet starts empty. Returns the configuration saved."""
        with self._locked():
            document, newline = self._load(cameras_required=False)
            _anchor_comments_on_key_lines(document)
            change(document)
            return self._save(document, newline)

    def _save(self, document, newline: str) -> Config:
        """Writes the document once its exact text, read as the stages read it, is a valid configuration."""
        buffer = io.StringIO()
        _alias_comments_as_at_anchor(document)
        _yaml().dump(document, buffer)
        text = buffer.getvalue()
        try:
            config = self.validate(pyyaml.safe_load(text))  # the text as the stages will read it
        except pyyaml.YAMLError as exc:
            raise SceneError(f"the edited {self.path} would not read back: {str(exc).splitlines()[0]}") from None
        try:
            replace_file(self.path, text.replace("\n", newline), follow_link=True)
        except OSError as exc:
            raise SceneError(f"cannot write configuration {self.path}: {exc.strerror}") from None
        return config
