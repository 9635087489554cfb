"""The configuration reference in the README, generated from the models so it cannot drift from them.

`python -m schemas.settings.reference --write` rewrites the block between the config-reference markers in README.md.
"""
from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from schemas.settings.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _nested_model(annotation) -> type[BaseModel] | None:
    """The model inside a field's type (Model, Model | None, list[Model]), if any."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in typing.get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    text = (text or str(annotation)).replace("typing.", "").replace("NoneType", "None")
    return text.replace(" | ", " or ")  # a bare | would split the Markdown table cell


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        is_list = typing.get_origin(field.annotation) is list
        if nested is not None:
            description = field.description or (nested.__doc__ or "").strip().split("\n")[0]
            lines.append(f"| `{path}{'[]' if is_list else ''}` | {nested.__name__}{' list' if is_list else ''} | "
                         f"| {description} |")
            lines.extend(rows(nested, f"{path}{'[]' if is_list else ''}."))
            continue
        default = "" if field.is_required() else repr(field.get_default(call_default_factory=True))
        required = "**required**" if field.is_required() else f"`{default}`"
        lines.append(f"| `{path}` | {_type_name(field.annotation)} | {required} | "
                     f"{(field.description or '').replace('|', '/')} |")
    return lines


def reference() -> str:
    return "\n".join(["| field | type | default | meaning |", "|---|---|---|---|", *rows(Config)])


def readme_with_reference(text: str) -> str:
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{reference()}\n{END}{after}"


if __name__ == "__main__":
    updated = readme_with_reference(README.read_text())
    if "--write" in sys.argv:
        README.write_text(updated)
    else:
        print(reference())
