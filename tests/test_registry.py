"""The registry rule shared by solvers, estimators, models and datasets: the same definition
registered again (a re-run notebook cell) replaces the entry; a different one raises."""

from __future__ import annotations

import textwrap

import pytest

from structvae.registry import Registry, definition_key


def _run_cell(source: str, namespace: dict) -> None:
    """Execute ``source`` as a notebook cell would: in ``__main__``'s namespace."""
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), namespace)


def test_same_definition_replaces_a_different_one_raises():
    reg: Registry = Registry("widget")
    ns: dict = {"__name__": "__main__", "reg": reg}
    cell = """
        def make(**kw):
            return ("first", kw)
        reg.add("w", make)
    """
    _run_cell(cell, ns)
    first = reg.get("w")
    _run_cell(cell.replace('"first"', '"second"'), ns)  # the cell edited and run again
    assert reg.get("w") is not first and reg.build("w", a=1) == ("second", {"a": 1})

    def make(**kw):  # another function under the taken name: a different definition
        return "other"

    with pytest.raises(ValueError, match="'w' is already registered"):
        reg.add("w", make)
    assert reg.build("w")[0] == "second"
    reg.add("w", make, overwrite=True)
    assert reg.build("w") == "other"


def test_wrapping_decorators_are_told_apart_by_what_they_wrap():
    def register(reg, name):  # the pattern of solvers.register: a closure around the user's fn
        def deco(fn):
            def factory(**options):
                return fn

            reg.add(name, factory)
            return fn

        return deco

    reg: Registry = Registry("solver")

    def mine():
        return 1

    def yours():
        return 2

    register(reg, "s")(mine)
    register(reg, "s")(mine)  # the same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        register(reg, "s")(yours)
    assert reg.build("s") is mine


def test_origin_bound_methods_and_classes():
    class A:
        @classmethod
        def build(cls, **kw):
            return cls

    class B(A):
        pass

    assert definition_key(A.build) != definition_key(B.build)  # same function, other class
    assert definition_key(A.build) == definition_key(A.build)
    reg: Registry = Registry("model")
    reg.add("m", A.build)
    reg.add("m", A.build)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("m", B.build)
    # origin=: the user's object decides, not the wrapper around it
    reg.add("o", lambda **kw: A, origin=A)
    reg.add("o", lambda **kw: B, origin=A)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("o", lambda **kw: A, origin=B)
    assert reg.build("o") is B


def test_names_order_unknown_and_remove():
    reg: Registry = Registry("thing", " (register your own)")
    reg.add("b", dict)
    reg.add("a", list)
    assert reg.names() == ["a", "b"] and reg.in_order() == ["b", "a"] and len(reg) == 2
    with pytest.raises(ValueError, match=r"unknown thing 'c'; available: a, b \(register"):
        reg.get("c")
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", dict)
    reg.remove("b")
    assert "b" not in reg and reg.names() == ["a"]
    reg.add("b", tuple)  # a removed name is free again
    assert reg.build("b") == ()


def test_every_registry_of_the_package_follows_the_rule():
    import torch

    import structvae as sv
    from structvae.solvers import Solver, available_solvers, get_solver, register

    ns: dict = {"__name__": "__main__", "register": register, "Solver": Solver, "torch": torch}
    cell = """
        @register("test-rerun-cell")
        class Zeros(Solver):
            exact = False
            def solve(self, potentials, hint=None):
                return torch.zeros(potentials.batch_size, potentials.num_vars, dtype=torch.long)
    """
    _run_cell(cell, ns)
    _run_cell(cell, ns)  # re-running the cell used to raise "already registered"
    assert "test-rerun-cell" in available_solvers()
    assert type(get_solver("test-rerun-cell")) is ns["Zeros"]
    with pytest.raises(ValueError, match="already registered"):
        register("test-rerun-cell")(sv.solvers.ExactSolver)
