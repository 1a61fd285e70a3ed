"""Name -> factory registries (the only global state structvae keeps).

One rule for every registry (solvers, estimators, models, datasets): registering a name that is
already taken raises ``ValueError``, unless ``overwrite=True`` or the new object comes from the
*same definition* as the registered one — the same ``__module__`` and ``__qualname__``, as when a
notebook cell that defines and registers a solver is run again — in which case it replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "definition_key"]


def definition_key(obj: Any) -> tuple:
    """Where ``obj`` was defined: ``(__module__, __qualname__)``, recursively for wrappers.

    ``functools.wraps``-style wrappers (``__wrapped__``) and bound methods are keyed by what they
    wrap; a closure (e.g. a registration decorator's inner ``factory`` around the user's function)
    also carries the keys of the callables it closes over, so two different user functions
    wrapped by the same decorator are told apart. Objects without a qualified name (instances)
    are keyed by identity.
    """
    return _definition_key(obj, depth=0)


def _definition_key(obj: Any, depth: int) -> tuple:
    if depth > 8:
        return ("id", id(obj))
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and wrapped is not obj:
        return _definition_key(wrapped, depth + 1)
    func = getattr(obj, "__func__", None)  # a bound method: its function and what it is bound to
    if func is not None:
        owner = getattr(obj, "__self__", None)
        return (_definition_key(func, depth + 1), _definition_key(owner, depth + 1))
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return ("id", id(obj))
    cells = getattr(obj, "__closure__", None) or ()
    inner = []
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value):
            inner.append(_definition_key(value, depth + 1))
    return (module, qualname, tuple(inner))


class Registry(Generic[T]):
    """A named set of factories for one kind of object (solvers, estimators, models, datasets)."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._factories: dict[str, Callable[..., T]] = {}
        self._origins: dict[str, tuple] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., T],
        overwrite: bool = False,
        *,
        origin: Any = None,
    ) -> None:
        """Register ``factory`` under ``name``.

        ``origin`` is the object the user registered, when ``factory`` wraps it (default
        ``factory`` itself); a taken name is replaced when the new origin has the same
        :func:`definition_key` as the old one, and raises ``ValueError`` otherwise (unless
        ``overwrite``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        key = definition_key(factory if origin is None else origin)
        if name in self._factories and not overwrite and self._origins.get(name) != key:
            raise ValueError(
                f"a {self.kind} named {name!r} is already registered (by a different "
                "definition); pass overwrite=True to replace it, or choose another name"
            )
        self._factories[name] = factory
        self._origins[name] = key

    def remove(self, name: str) -> None:
        """Forget ``name`` (``KeyError`` if it is not registered)."""
        del self._factories[name]
        self._origins.pop(name, None)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (``ValueError`` listing the names if unknown)."""
        if name not in self._factories:
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}{self.hint}"
            )
        return self._factories[name]

    def build(self, name: str, **options) -> T:
        return self.get(name)(**options)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def in_order(self) -> list[str]:
        """The registered names in registration order."""
        return list(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __len__(self) -> int:
        return len(self._factories)
