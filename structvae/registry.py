"""Name -> factory registries (the only global state structvae keeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A named set of factories for one kind of object (solvers, estimators)."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._factories: dict[str, Callable[..., T]] = {}

    def add(self, name: str, factory: Callable[..., T], overwrite: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._factories and not overwrite:
            raise ValueError(
                f"a {self.kind} named {name!r} is already registered; "
                "pass overwrite=True to replace it"
            )
        self._factories[name] = factory

    def build(self, name: str, **options) -> T:
        if name not in self._factories:
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}{self.hint}"
            )
        return self._factories[name](**options)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
