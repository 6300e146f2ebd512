"""``SearchSpace``: a method's search space, read once from its YAML form (``{param: {uniform|loguniform|
randint: [low, high]} | {choice|grid: [...]} | constant}``) and used everywhere as this type: the schema
checks its shape, validation checks it against the method's typed Params, the sweep converts it to Tune
(``orchestrator.driver.sweep.tune_space``), and membership (which presets a sweep may be told about) and
the largest value of a dimension (ASHA's epochs) are asked of it. Nothing else reads the YAML form."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from orchestrator.job.messages import model_errors

RANGE_KINDS = ("uniform", "loguniform", "randint")
VALUE_KINDS = ("choice", "grid")
SPACE_KINDS = RANGE_KINDS + VALUE_KINDS
CONSTANT = "constant"
MAX_CHOICES = 1000  # values of one choice/grid dimension


def dimension_problem(kind: str, arg: Any) -> str | None:
    """Why one search dimension ``{kind: arg}`` is malformed (bounds, values), or None."""
    if kind in RANGE_KINDS:
        if not isinstance(arg, list) or len(arg) != 2:
            return f"{kind}: give [low, high], e.g. {{{kind}: [1, 10]}}"
        if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in arg):
            return f"{kind}: the bounds {arg} must be numbers (write 1.0e-3, not '1e-3' in quotes)"
        if not all(math.isfinite(b) for b in arg):
            return f"{kind}: the bounds {arg} must be finite"
        if arg[0] >= arg[1]:
            return f"{kind}: give [low, high] with low < high (got {arg})"
        if kind == "loguniform" and arg[0] <= 0:
            return "loguniform: the low bound must be > 0"
        if kind == "randint" and not all(float(b).is_integer() for b in arg):
            return f"randint: the bounds {arg} must be whole numbers"
        return None
    if not isinstance(arg, list) or not arg:
        return f"{kind}: give a non-empty list of values"
    if len(arg) > MAX_CHOICES:
        return f"{kind}: {len(arg)} values; at most {MAX_CHOICES}"
    if any(isinstance(v, float) and not math.isfinite(v) for v in arg):
        return f"{kind}: the values must be finite"
    return None


@dataclass(frozen=True)
class Dimension:
    """One parameter of a space: a range (``low``, ``high``), a list of values, or a constant."""

    kind: str  # one of SPACE_KINDS, or CONSTANT
    values: tuple[Any, ...]  # (low, high) for a range; the values of choice/grid; (value,) for a constant

    @property
    def searched(self) -> bool:
        return self.kind != CONSTANT

    def contains(self, value: Any) -> bool:
        """True when this dimension can produce ``value``."""
        if self.kind in RANGE_KINDS:
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and self.values[0] <= value <= self.values[1])
        return value in self.values

    def as_yaml(self) -> Any:
        return self.values[0] if self.kind == CONSTANT else {self.kind: list(self.values)}


@dataclass(frozen=True)
class SearchSpace:
    """A method's search space: parameter name -> ``Dimension``, in the order the job gives them."""

    dimensions: dict[str, Dimension]

    @staticmethod
    def shape_problems(raw: dict[str, Any] | None) -> list[str]:
        """Problems of the YAML form's shape, as 'param: what and how to fix' lines (empty when well formed)."""
        problems = []
        for key, value in (raw or {}).items():
            if isinstance(value, dict):
                if len(value) != 1 or next(iter(value)) not in SPACE_KINDS:
                    problems.append(f"{key}: use exactly one of {', '.join(SPACE_KINDS)}, "
                                    f"e.g. {{loguniform: [1.0e-4, 1.0e-2]}}")
                    continue
                problem = dimension_problem(*next(iter(value.items())))
                if problem:
                    problems.append(f"{key}.{problem}")
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{key}: {value} is not a finite number")
        return problems

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> SearchSpace:
        """The space of a YAML form; ``ValueError`` listing every shape problem."""
        problems = cls.shape_problems(raw)
        if problems:
            raise ValueError("\n".join(problems))
        dims = {}
        for key, value in (raw or {}).items():
            if isinstance(value, dict):
                kind, arg = next(iter(value.items()))
                dims[key] = Dimension(kind, tuple(arg))
            else:
                dims[key] = Dimension(CONSTANT, (value,))
        return cls(dims)

    def __bool__(self) -> bool:
        return bool(self.dimensions)

    def __contains__(self, name: object) -> bool:
        return name in self.dimensions

    def __iter__(self) -> Iterator[str]:
        """The parameter names, in the job's order."""
        return iter(self.dimensions)

    @property
    def searched(self) -> list[str]:
        """The parameters a search samples (not the constants)."""
        return [k for k, d in self.dimensions.items() if d.searched]

    @property
    def grids(self) -> dict[str, tuple[Any, ...]]:
        return {k: d.values for k, d in self.dimensions.items() if d.kind == "grid"}

    def contains(self, point: dict[str, Any]) -> bool:
        """True when ``point`` gives every searched parameter a value its dimension can produce."""
        return all(d.contains(point.get(k)) for k, d in self.dimensions.items() if d.searched)

    def points(self, name: str) -> list[Any]:
        """The values that bound parameter ``name``: its bounds, its values, or its constant (none if absent)."""
        dim = self.dimensions.get(name)
        return list(dim.values) if dim is not None else []

    def largest(self, name: str, default: float) -> float:
        """The largest numeric value ``name`` can take here (``default`` when it is not searched)."""
        numbers = [v for v in self.points(name) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return max([default] + numbers)

    def as_yaml(self) -> dict[str, Any]:
        return {k: d.as_yaml() for k, d in self.dimensions.items()}

    def problems_for(self, prefix: str, method: str, params: type[BaseModel]) -> list[str]:
        """Every dimension must name a parameter of ``params``, use a kind that fits its type, and stay in
        its range: 'prefix.param: what and how to fix' lines."""
        errors: list[str] = []
        fields = params.model_fields
        for key, dim in self.dimensions.items():
            if key not in fields:
                errors.append(f"{prefix}.{key}: not a parameter of {method}; searchable: {', '.join(sorted(fields))}")
                continue
            problem = kind_problem(key, fields[key].annotation, dim.kind)
            if problem:
                errors.append(f"{prefix}.{key}.{dim.kind}: {problem}")
                continue
            for point in dim.values:
                errors += model_errors(prefix, params, {key: point}, "not a parameter")
        return list(dict.fromkeys(errors))


def _base_type(annotation: Any) -> Any:
    """The scalar type a sampled value takes: float for ``float | list[float]`` (a per-channel option)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        scalars = [a for a in typing.get_args(annotation) if a in (int, float)]
        return float if float in scalars else (scalars[0] if scalars else annotation)
    return annotation


def kind_problem(name: str, annotation: Any, kind: str) -> str | None:
    """Why searching parameter ``name`` (of type ``annotation``) with ``kind`` cannot work, or None."""
    base = _base_type(annotation)
    if base is int and kind in ("uniform", "loguniform"):
        return f"{name} is a whole number; search it with randint: [low, high] (or choice)"
    if base not in (int, float) and kind in RANGE_KINDS:
        return f"{name} is not numeric; search it with choice: [...] (or grid)"
    return None
