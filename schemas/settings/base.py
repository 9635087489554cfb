"""Pieces every configuration module shares."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
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
