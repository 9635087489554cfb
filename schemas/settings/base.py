"""Pieces every configuration module shares."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Upper case only, as environment variables are conventionally named: a secret pasted where its variable's name
# belongs (mixed case, digits first) is refused, and refusals never repeat the value.
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, description="name of an environment variable")]
Point = tuple[float, float]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending field."""


class Frozen(BaseModel):
    """Strict and immutable: unknown fields are errors, nothing changes after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def require_unique(ids: list[str], what: str) -> None:
    duplicates = sorted({value for value in ids if ids.count(value) > 1})
    if duplicates:
        raise ValueError(f"duplicate {what}: {', '.join(duplicates)}")
