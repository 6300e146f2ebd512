"""Validation errors as the user reads them: pydantic's errors turned into 'field: what and how to fix' lines,
with the field's full path and small values echoed back (never strings that may carry credentials)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

FRIENDLY = {
    "extra_forbidden": "unknown key; remove it or check its spelling",
    "missing": "required; add it",
    "string_pattern_mismatch": "use letters, digits, _ . - (starting with a letter or digit)",
    "finite_number": "must be a finite number (not .inf or .nan)",
}


def model_errors(prefix: str, model: type[BaseModel], values: Any, extra_key: str = "unknown option") -> list[str]:
    """Problems of ``values`` against ``model`` (a registry entry's options, a method's params), as
    'prefix.field: what and how to fix' lines (empty when valid); ``extra_key`` names an unknown key."""
    try:
        model.model_validate(values)
    except ValidationError as err:
        return format_validation_error(err, prefix, extra_key=extra_key)
    return []


def format_validation_error(err: ValidationError, prefix: str = "", extra_key: str = "unknown key") -> list[str]:
    """Pydantic errors as 'field: what and how to fix' lines (``prefix`` names the enclosing block)."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "") or "(top level)"
        msg = FRIENDLY.get(e["type"], e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = msg.replace("unknown key", extra_key)
        value = e.get("input")
        if e["type"] not in ("extra_forbidden", "missing", "value_error") and _shown(value):
            msg += f" (got {value!r})"
        out += [_located(loc, line) for line in msg.split("\n")]
    return out


def _located(loc: str, line: str) -> str:
    """'sweep' + 'space.lr.uniform: ...' -> 'sweep.space.lr.uniform: ...': a validator that reports several
    problems starts each line with the path below the field it checks."""
    parent, _, last = loc.rpartition(".")
    if line.startswith((f"{last}.", f"{last}:")):
        return f"{parent}.{line}" if parent else line
    if re.match(r"[a-z_][a-z0-9_.]*: ", line) and loc != "(top level)":
        return f"{loc}.{line}"
    return f"{loc}: {line}"


def _shown(value: Any) -> bool:
    """Small scalars are echoed back in messages; strings that may carry credentials are not."""
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, str) and len(value) <= 40 and "://" not in value and "@" not in value
