"""The options a model or estimator declares: what a user may set from a spec or the CLI.

A leaf module: it imports nothing of structvae, so that models, estimators, the spec parser and
the CLI can all read the same declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "boolean", "int_tuple", "optional"]


@dataclass(frozen=True)
class Option:
    """One constructor option of a model or estimator.

    Attributes:
        name: the python keyword (e.g. ``"pairwise"``); the CLI flag is ``--pairwise``.
        type: converts a CLI / spec string to the value (``float``, ``int``, ``str`` …).
        default: the value when the option is not given (``None``: the class's own default).
        help: one line for ``--help``.
        choices: the allowed values, or ``None`` for any.
        identity: part of a run's identity (a resume must match it) or not.
    """

    name: str
    type: Callable = str
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    identity: bool = True


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def boolean(value: Any) -> bool:
    """``"true"/"yes"/"on"/"1"`` -> True, ``"false"/"no"/"off"/"0"`` -> False (a bool passes)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean ({'/'.join(_TRUE)} or {'/'.join(_FALSE)}), got {value!r}")


def int_tuple(value: Any) -> tuple[int, ...]:
    """``"300"`` or ``"400,200"`` (or a sequence of ints) -> ``(400, 200)``."""
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        return tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"expected integers separated by commas (e.g. 400,200), got {value!r}"
        ) from None


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` that maps ``None`` / ``"none"`` / ``""`` to ``None`` (e.g. an optional float)."""

    def fn(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return convert(value)

    fn.__name__ = f"optional_{getattr(convert, '__name__', 'value')}"
    return fn
