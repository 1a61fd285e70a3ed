"""Specs: a registered name with options, ``"direct:eps=0.1,solver=ilp"``.

    spec = parse_spec("direct:eps=0.1,solver=ilp")
    spec.name, spec.options                 # "direct", {"eps": "0.1", "solver": "ilp"}
    convert_options(spec.options, DirectEstimator.options, "estimator 'direct'")
                                            # {"eps": 0.1, "solver": "ilp"}

The one parser of the CLI (``--estimator``, ``--model``), the gradient lab and the experiment
scripts. Values stay strings until :func:`convert_options` converts them with the
:class:`~structvae.options.Option` the model or estimator declares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..options import Option

__all__ = [
    "Spec",
    "parse_spec",
    "parse_assignments",
    "convert_options",
    "estimator_options",
    "model_options",
]


@dataclass(frozen=True)
class Spec:
    """A name and its options as given (strings); ``str(spec)`` is the canonical text."""

    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


def parse_assignments(items: Iterable[str], where: str) -> dict[str, str]:
    """``["eps=0.1", "solver=ilp"]`` -> ``{"eps": "0.1", "solver": "ilp"}``; ``ValueError``
    naming ``where`` for an item without ``=``, an empty key or a key given twice."""
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{where}: option {item!r} is not key=value")
        if not key.isidentifier():
            raise ValueError(f"{where}: option name {key!r} is not a valid name")
        if key in out:
            raise ValueError(f"{where}: option {key!r} is given twice")
        out[key] = value.strip()
    return out


def parse_spec(text: str) -> Spec:
    """``"name"`` or ``"name:key=value,key=value"`` -> :class:`Spec` (values kept as strings).

    Raises ``ValueError`` (one line, quoting ``text``) for an empty name or an option that is
    not ``key=value``. Whether the name and options exist is checked by the caller, against
    the registry and the declared options (:func:`convert_options`).
    """
    if not isinstance(text, str):
        raise ValueError(f"a spec is a string such as 'direct:eps=0.1', got {text!r}")
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"spec {text!r} has no name before ':' (e.g. 'direct:eps=0.1')")
    return Spec(name, parse_assignments(rest.split(","), f"spec {text!r}"))


def _convert(option: Option, value: Any, owner: str) -> Any:
    if isinstance(value, str):
        try:
            value = option.type(value)
        except (TypeError, ValueError) as e:
            kind = getattr(option.type, "__name__", "value")
            raise ValueError(
                f"{owner}: option {option.name}={value!r} is not a {kind} ({e})"
            ) from None
    if option.choices is not None and value not in option.choices:
        raise ValueError(
            f"{owner}: option {option.name}={value!r} must be one of "
            f"{', '.join(str(c) for c in option.choices)}"
        )
    return value


def convert_options(
    options: Mapping[str, Any], declared: Sequence[Option], owner: str
) -> dict[str, Any]:
    """``options`` converted by the declared :class:`~structvae.options.Option` types.

    Strings go through ``Option.type``; every value is checked against ``Option.choices``.
    ``owner`` (e.g. ``"estimator 'direct'"``) starts the one-line ``ValueError`` for an
    unknown option (listing the valid ones), a value that does not convert, or a bad choice.
    """
    by_name = {o.name: o for o in declared}
    out = {}
    for key, value in options.items():
        if key not in by_name:
            valid = ", ".join(by_name) if by_name else "none"
            raise ValueError(f"{owner} has no option {key!r}; its options: {valid}")
        out[key] = _convert(by_name[key], value, owner)
    return out


def estimator_options(name: str) -> tuple[Option, ...]:
    """The options the registered estimator ``name`` declares (``ValueError``: unknown name)."""
    from ..estimators.base import _REGISTRY

    return _declared(_REGISTRY.get(name))


def model_options(name: str) -> tuple[Option, ...]:
    """The options the registered model ``name`` declares (``ValueError``: unknown name).

    A model registered as a class, or as a bound ``from_spec``, declares its class's
    ``options``; a plain factory function may carry an ``options`` attribute (else none).
    """
    from ..models import MODELS

    return _declared(MODELS.get(name))


def _declared(factory) -> tuple[Option, ...]:
    owner = getattr(factory, "__self__", factory)  # a bound classmethod: its class
    options = getattr(owner, "options", ())
    return tuple(o for o in options if isinstance(o, Option))
