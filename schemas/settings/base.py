"""Pieces every configuration module shares."""
from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from schemas.base import ID_MAX_CHARS
from schemas.geometry import polygon_area, polygon_is_simple

# What a pattern asks for, in words: a refusal says that rather than the regular expression.
PATTERN_WORDS: dict[str, str] = {}


def worded(pattern: str, words: str) -> str:
    """`pattern`, whose refusals say `words` ("should be <words>")."""
    PATTERN_WORDS[pattern] = words
    return pattern


ID_PATTERN = worded(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                    "letters, digits, '_', '.' and '-', starting with a letter or digit")
Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=ID_MAX_CHARS)]
# Upper case only, as environment variables are conventionally named: a secret pasted where its variable's name
# belongs (mixed case, digits first) is refused, and refusals never repeat the value.
ENV_NAME_PATTERN = worded(r"^[A-Z_][A-Z0-9_]*$", "the name of an environment variable: upper-case letters, digits "
                          "and '_', not starting with a digit")
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, description="name of an environment variable")]
# Beyond any picture's pixels and any site's metres (a UTM northing reaches 1e7): a coordinate past it is a typo, and
# squared, as areas and edge crossings square them, would overflow to inf, and warn on stderr, before it was refused.
MAX_COORDINATE = 1e7
Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
Point = tuple[Coordinate, Coordinate]
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending field."""


def refuse_truth_value(value: object) -> object:
    """A number as given, unless it is true or false, which pydantic would read as 1 or 0."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "a number, not true/false (YAML reads yes, no, on and off as "
                                  "true/false)")
    return value


# Keys of a core schema that hold no schema to guard: a default is a value, metadata and serialization are not read
# when validating.
NOT_VALIDATING_KEYS = frozenset({"default", "metadata", "serialization"})


def numbers_refusing_truth_values(schema: object) -> object:
    """`schema` with every int and float in it (a field, a list item, a tuple member, a dict key or value, at any
    depth) refusing true and false, each where it is, so that the error names the field or item."""
    if isinstance(schema, list | tuple):
        return type(schema)(numbers_refusing_truth_values(item) for item in schema)
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in ("int", "float"):
        return core_schema.no_info_before_validator_function(refuse_truth_value, schema)
    if schema.get("type") == "function-before" and schema["function"].get("function") is refuse_truth_value:
        return schema  # a nested model's number, guarded already when its own schema was made
    return {key: value if key in NOT_VALIDATING_KEYS else numbers_refusing_truth_values(value)
            for key, value in schema.items()}


class Frozen(BaseModel):
    """Strict and immutable: unknown fields are errors, nothing changes after validation.

    Non-finite numbers are errors too: YAML reads `.nan` and `.inf` as floats, and a NaN vertex or bound slips
    through every comparison (a zone would read 0 p/m² forever, a `.inf` level never be reached). So are true and
    false where a number belongs: YAML reads `fps: yes` as true, which pydantic would take for 1 fps, and
    `partitions: off` for 0. They are refused by type, in the schema pydantic makes of each model, rather than by a
    validator on every field: one on the Literal field that tells an alert channel's kind apart would keep pydantic
    from choosing the channel's model by it, and a check of the whole model would name the model, not the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /) -> CoreSchema:
        return numbers_refusing_truth_values(handler(source))


def refuse_retired(data: object, retired: dict[str, str]) -> object:
    """`data` as it is, unless it gives a setting no longer read (name -> what to give instead): ValueError naming
    both, rather than the bare "extra inputs are not permitted" of a misspelt name."""
    if isinstance(data, dict):
        for name, instead in retired.items():
            if name in data:
                raise ValueError(f"{name} is no longer read: {instead}")
    return data


def require_unique(ids: list[str], what: str) -> None:
    duplicates = sorted({value for value in ids if ids.count(value) > 1})
    if duplicates:
        raise ValueError(f"duplicate {what}: {', '.join(duplicates)}")


# A drawn outline needs far fewer; the cap bounds the edge-crossing check, which compares every pair of edges, for
# a file saved from the console or written by hand.
MAX_POLYGON_POINTS = 256


def verify_simple_polygon(polygon: list[Point]) -> list[Point]:
    """A polygon of at most MAX_POLYGON_POINTS points whose edges do not cross (checked first: a symmetric bow tie
    also has zero signed area) and that encloses an area, without a point that repeats the one before it.

    Such a point is dropped rather than refused: GeoJSON and shapely close an outline by repeating its first point at
    the end, and a double click in a drawing tool repeats a vertex. Either leaves an edge of no length, which meets
    its neighbours' edges: the outline was refused as one whose edges cross."""
    polygon = [point for index, point in enumerate(polygon) if index == 0 or point != polygon[index - 1]]
    if len(polygon) > 1 and polygon[-1] == polygon[0]:
        polygon = polygon[:-1]
    if len(polygon) > MAX_POLYGON_POINTS:
        raise ValueError(f"polygon has {len(polygon)} points; at most {MAX_POLYGON_POINTS} are allowed")
    if not all(math.isfinite(value) for point in polygon for value in point):
        raise ValueError("polygon has a coordinate that is not a finite number")
    if not polygon_is_simple(polygon):
        raise ValueError("polygon edges cross each other")
    if polygon_area(polygon) <= 0:
        raise ValueError("polygon has zero area (collinear or repeated points)")
    return polygon


# One label of a host name (RFC 1123): letters, digits and inner hyphens.
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def verify_listen_host(host: str) -> str:
    """An address to listen on: an IP address (IPv6 without brackets) or a host name. Anything else (a space, a URL,
    999.1.1.1) stopped each stage as it began listening there, with an error that blamed its port."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if not (0 < len(host) <= 253 and all(HOST_LABEL.match(label) for label in labels)
            and not all(label.isdigit() for label in labels)):
        raise ValueError("not an IP address (IPv6 without brackets) or host name; 0.0.0.0 listens on every IPv4 "
                         "interface, 127.0.0.1 on this machine alone")
    return host


ListenHost = Annotated[str, AfterValidator(verify_listen_host)]


DEFAULT_PORTS = {"http": 80, "https": 443}  # what a URL of the scheme names no port for (browsers leave it out)


SOURCE_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def verify_source_variables(source: str) -> str:
    """A source's `${NAME}` placeholders must name environment variables (upper case, as the *_env settings); the
    error does not quote one that does not, which may be a password pasted in its place."""
    for position, name in enumerate(SOURCE_VARIABLE.findall(source), start=1):
        if not re.match(ENV_NAME_PATTERN, name):
            raise ValueError(f"placeholder {position} (${{...}}) does not name an environment variable (upper case "
                             "letters, digits, _)")
    return source


def verify_source_characters(source: str) -> str:
    """A source names a file, stream or webcam: one of blanks, or with a control character (a newline or tab pasted
    with it), names none, and would split each warning and log line that shows it."""
    if not source.strip():
        raise ValueError("source is blank")
    if CONTROL_CHARACTER.search(source):
        raise ValueError("source holds a control character (a newline or tab?)")
    return source


# What FFmpeg reads cameras over; a scheme outside them is a typo (rstp://), which would be read as a live playlist.
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp", "ftp", "file")


def verify_source_scheme(source: str) -> str:
    """A URL source's scheme must be one cameras are read over, the error suggesting the closest."""
    scheme, separator, _ = source.partition("://")
    if separator and scheme.lower() not in SOURCE_SCHEMES:
        closest = difflib.get_close_matches(scheme.lower(), SOURCE_SCHEMES, n=2)
        raise ValueError(f"unknown URL scheme {scheme!r}" + (f" (did you mean {' or '.join(closest)}?)" if closest
                                                             else "")
                         + f"; cameras are read over {', '.join(SOURCE_SCHEMES)}")
    return source


def source_with_variables(source: str, where: str) -> str:
    """The source with each `${NAME}` replaced by that environment variable, so that a camera's password stays out
    of the configuration file (rtsp://viewer:${ALLEY_CAMERA_PASSWORD}@10.0.0.5/stream1); ConfigError naming every
    variable that is unset, never a value."""
    values = _source_variables(source, where)
    return SOURCE_VARIABLE.sub(lambda match: values[match.group(1)], source)


def source_variable_values(source: str, where: str) -> list[str]:
    """The values `source_with_variables` puts into the source: secrets, to be kept out of every log line."""
    return list(_source_variables(source, where).values())


def _source_variables(source: str, where: str) -> dict[str, str]:
    return env_values(SOURCE_VARIABLE.findall(source), where)


def env_values(names: list[str], where: str) -> dict[str, str]:
    """The values of the environment variables a setting needs, by name; those unset named in one error: named one
    at a time, each start would tell an operator setting them of the next alone."""
    values = {name: env_value(name, where) for name in names}
    unset = [name for name, value in values.items() if value is None]
    if len(unset) == 1:
        raise ConfigError(f"{where}: environment variable {unset[0]} is not set")
    if unset:
        raise ConfigError(f"{where}: environment variables {', '.join(unset[:-1])} and {unset[-1]} are not set")
    return values


def env_value(name: str, where: str) -> str | None:
    """A secret or URL from the environment, without the newline a file or `echo` leaves around it; None when unset.

    A control character within is refused at start, naming the variable but never quoting its value: sent in a
    header, it would fail every request with an error quoting the secret, or be refused by the other side.
    """
    value = os.environ.get(name, "").strip()
    if CONTROL_CHARACTER.search(value):
        raise ConfigError(f"{where}: environment variable {name} holds a control character")
    return value or None
