"""The configuration reference in the README, generated from the models so it cannot drift from them.

`python -m schemas.settings.reference --write` rewrites the block between the config-reference markers in README.md.
"""
from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from schemas.settings.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _models_in(annotation) -> list[type[BaseModel]]:
    """The models inside a field's type (Model, Model | None, list[Model], a union of models told apart by a
    discriminator), in order."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return list(dict.fromkeys(model for inner in typing.get_args(annotation) for model in _models_in(inner)))


def _type_name(annotation) -> str:
    """A type as a reader writes it: constraints (Annotated) left out, unions with "or" (a bare | would split the
    Markdown table cell)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " or ".join(repr(value) for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _kind(model: type[BaseModel]) -> str | None:
    """The value of a model's `kind` discriminator, when it has one."""
    field = model.model_fields.get("kind")
    values = typing.get_args(field.annotation) if field is not None else ()
    return str(values[0]) if len(values) == 1 else None


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        is_list = typing.get_origin(field.annotation) is list
        if len(nested) == 1:
            model_type = nested[0]
            description = field.description or (model_type.__doc__ or "").strip().split("\n")[0]
            lines.append(f"| `{path}{'[]' if is_list else ''}` | {model_type.__name__}{' list' if is_list else ''} | "
                         f"| {description} |")
            lines.extend(rows(model_type, f"{path}{'[]' if is_list else ''}."))
            continue
        if nested:  # one of several kinds, told apart by `kind`: each kind's fields under its own path
            kinds = " or ".join(f"`{_kind(kind)}`" for kind in nested)
            lines.append(f"| `{path}{'[]' if is_list else ''}` | list | `[]` | each one of the kinds {kinds} "
                         f"(its `kind`), with that kind's fields below |")
            for kind in nested:
                kind_path = f"{path}[kind={_kind(kind)}]"
                lines.append(f"| `{kind_path}` | {kind.__name__} | | {(kind.__doc__ or '').strip().splitlines()[0]} |")
                lines.extend(rows(kind, f"{kind_path}."))
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
