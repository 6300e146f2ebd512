"""The base of every typed options / parameters model in camu (and of the job spec built on them).

User input arrives as YAML, where ``true`` is a number to Python, ``.inf`` and ``.nan`` are floats,
and a stray key is a typo. ``StrictModel`` refuses all three: unknown keys, non-finite numbers, and
booleans where a number (or a class id) is expected, so that such values are reported with their
field instead of silently becoming 1, or an infinite resource request.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

SEED_MAX = 2**31 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description=f"a seed in [0, {SEED_MAX}]")]


def _admits_bool(annotation: Any) -> bool:
    """True when ``annotation`` accepts a bool on purpose (bool, Any, or a union/Literal holding one)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return False


def _scalar_kind(annotation: Any) -> bool:
    """True for annotations that are (unions of) scalars, where a bool would be coerced silently."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return all(_scalar_kind(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in (int, float, str) or origin is typing.Literal


class StrictModel(BaseModel):
    """Unknown keys, infinite / NaN numbers and booleans given for numbers are validation errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and _scalar_kind(annotation) and not _admits_bool(annotation):
            raise PydanticCustomError("bool_for_number", "{value} is a boolean; give a {kind}",
                                      {"value": str(value).lower(), "kind": _type_name(annotation)})
        if isinstance(value, (list, dict)) and any(isinstance(v, bool) for v in value):
            args = typing.get_args(annotation)
            if args and _scalar_kind(args[0]) and not _admits_bool(args[0]):
                raise PydanticCustomError("bool_for_number", "booleans are not accepted here; give {kind} values",
                                          {"kind": _type_name(args[0])})
        return value


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    names = {int: "whole number", float: "number", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", "value"))
