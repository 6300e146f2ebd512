"""A tiny, explicit name -> object registry (datasets, models, scenarios, methods).

Registration happens at import time of the module that defines the object, and every
package imports its modules explicitly, so the same names exist in every process (Ray
workers import by module path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a registry lookup fails; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects, with a one-line description for listings."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` with a one-line ``description``
        (required: it is what `camu-orch ls` shows)."""
        if not description or not description.strip():
            raise ValueError(f"{self.kind} {name!r} needs a one-line description")

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._descriptions[name] = description.strip().splitlines()[0]
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; the error lists the known names."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, for `camu-orch ls`."""
        return {name: self._descriptions[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._items
