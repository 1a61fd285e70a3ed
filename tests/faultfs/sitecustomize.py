"""Test-only fault injection for subprocess tests (tests/test_cli_errors.py).

Put this folder on ``PYTHONPATH`` and set ``STRUCTVAE_FAULT``:

- ``erofs:PREFIX``: creating folders or opening files for writing under ``PREFIX`` fails with
  ``EROFS`` (a read-only file system);
- ``enospc:PREFIX``: files whose name holds ``.pt.tmp-`` (checkpoint temporaries) under
  ``PREFIX`` are opened on ``/dev/full``, so writing them fails with the kernel's ``ENOSPC``
  (a full disk).
"""

from __future__ import annotations

import builtins
import errno
import io
import os

_SPEC = os.environ.get("STRUCTVAE_FAULT", "")
if ":" in _SPEC:
    _KIND, _PREFIX = _SPEC.split(":", 1)
    _PREFIX = os.path.abspath(_PREFIX)
    _open, _mkdir = builtins.open, os.mkdir

    def _under(path) -> bool:
        if isinstance(path, int):
            return False
        return os.path.abspath(os.fspath(path)).startswith(_PREFIX)

    def _writing(mode: str) -> bool:
        return any(c in mode for c in "wax+")

    def _faulty_open(file, mode="r", *args, **kwargs):
        if _under(file) and _writing(mode):
            if _KIND == "erofs":
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(file))
            if _KIND == "enospc" and ".pt.tmp-" in os.fspath(file):
                return _open("/dev/full", mode, *args, **kwargs)
        return _open(file, mode, *args, **kwargs)

    def _faulty_mkdir(path, *args, **kwargs):
        if _KIND == "erofs" and _under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return _mkdir(path, *args, **kwargs)

    builtins.open = io.open = _faulty_open
    os.mkdir = _faulty_mkdir
