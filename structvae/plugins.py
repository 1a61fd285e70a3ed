"""Plugins: the user's own solvers, estimators, models and datasets, registered by importing them.

A plugin is any Python module that registers something when imported (``@register("my-solver")``,
``register_estimator``, ``register_model``, ``register_dataset``). The CLI loads, in this order:

1. every ``--import MODULE_OR_FILE.py`` (repeatable; any subcommand): a module name
   (``my_solvers``, ``pkg.plugins``; the current folder is searched last) or a path to a ``.py``
   file (imported under its file name, its folder added to the end of ``sys.path``);
2. ``$STRUCTVAE_PLUGINS``: the same, comma-separated;
3. the entry points of group ``structvae.plugins`` of the installed distributions, e.g. in a
   ``pyproject.toml``::

       [project.entry-points."structvae.plugins"]
       my_solvers = "my_package.solvers"            # a module: importing it registers
       more = "my_package.extra:register_all"       # a function: called once, no arguments

In Python, ``load_plugins(["my_solvers.py"])`` does the same. Each plugin is loaded once per
process. A plugin that cannot be imported raises :class:`PluginError`, one line naming it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "PluginError", "import_plugin", "load_plugins"]

ENV_VAR = "STRUCTVAE_PLUGINS"
ENTRY_POINT_GROUP = "structvae.plugins"

_LOADED: dict[str, object] = {}  # what each plugin source gave, so each loads once per process


class PluginError(ImportError):
    """A plugin could not be imported; the message (one line) names it and says why."""


def load_plugins(
    imports: Iterable[str] = (), *, env: bool = True, entry_points: bool = True
) -> list[str]:
    """Import the plugins ``imports`` (module names or ``.py`` paths), then those named in
    ``$STRUCTVAE_PLUGINS`` (``env``), then the ``structvae.plugins`` entry points
    (``entry_points``). Returns the names of the modules / entry points loaded, in order."""
    loaded: list[str] = []
    for spec in imports:
        loaded.append(import_plugin(spec, origin="--import").__name__)
    if env:
        for spec in os.environ.get(ENV_VAR, "").split(","):
            if spec.strip():
                loaded.append(import_plugin(spec, origin=f"${ENV_VAR}").__name__)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(ep)
            loaded.append(ep.name)
    return loaded


def import_plugin(spec: str, origin: str = "--import") -> ModuleType:
    """Import one plugin: a module name, or a path to a ``.py`` file (``origin`` goes into the
    error message: where the name came from)."""
    text = str(spec).strip()
    if not text:
        raise PluginError(f"empty plugin name (from {origin}): give a module name or a .py file")
    if text.endswith(".py") or "/" in text or os.sep in text:
        return _import_file(text, origin)
    return _import_module(text, origin)


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _fail(spec: str, origin: str, why: str) -> PluginError:
    return PluginError(f"cannot import plugin {spec!r} (from {origin}): {why}")


def _import_module(name: str, origin: str) -> ModuleType:
    key = f"module:{name}"
    if key in _LOADED:
        return _LOADED[key]  # type: ignore[return-value]
    try:
        module = _import_searching_cwd(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):
            raise _fail(
                name,
                origin,
                f"no module named {e.name!r} on sys.path or in {os.getcwd()}; give an "
                "importable module name or the path of a .py file",
            ) from None
        raise _fail(name, origin, _one_line(e)) from e
    except (Exception, SystemExit) as e:
        raise _fail(name, origin, _one_line(e)) from e
    _LOADED[key] = module
    return module


def _import_searching_cwd(name: str) -> ModuleType:
    """``import name``; if it is not found, look in the current folder too (``python -m``
    searches it, the ``structvae`` console script does not)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        top = name.split(".")[0]
        if e.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def _import_file(text: str, origin: str) -> ModuleType:
    path = Path(text).expanduser()
    if not path.is_file():
        raise _fail(text, origin, f"no such file {str(path.resolve())!r}")
    path = path.resolve()
    key = f"file:{path}"
    if key in _LOADED:
        return _LOADED[key]  # type: ignore[return-value]
    name = _module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _fail(text, origin, "not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # so that it can import the modules beside it
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise _fail(text, origin, _where(e, path) + _one_line(e)) from e
    _LOADED[key] = module
    return module


def _module_name_for(path: Path) -> str:
    """The file's stem, unless that names another module already (then a private name)."""
    stem = re.sub(r"\W", "_", path.stem)
    if not stem.isidentifier():
        stem = f"_{stem}"
    existing = sys.modules.get(stem)
    if existing is None or Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return stem
    return f"_structvae_plugin_{stem}_{abs(hash(str(path))) % 10**8}"


def _where(e: BaseException, path: Path) -> str:
    """``line N: `` of the innermost frame in the plugin file itself (or a SyntaxError's line)."""
    if isinstance(e, SyntaxError) and e.lineno:
        return f"line {e.lineno}: "
    tb = e.__traceback__
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"line {line}: " if line else ""


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    key = f"entry-point:{ep.name}={ep.value}"
    if key in _LOADED:
        return
    origin = f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}"
    try:
        obj = ep.load()
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            obj()  # "pkg.module:register_all": a function that registers
    except (Exception, SystemExit) as e:
        raise _fail(ep.value, origin, _one_line(e)) from e
    _LOADED[key] = obj
