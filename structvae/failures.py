"""One-line descriptions of the errors a ``structvae`` command can meet, saying what to do.

:func:`describe` turns an exception into the text after ``structvae <command>: error:``. File
system errors are recognised anywhere in the exception's chain (``torch.save`` on a full disk
raises a ``RuntimeError`` whose *cause* is the ``OSError`` with ``ENOSPC``), so the user reads
"no space left on device" instead of a serialiser's internal message.
"""

from __future__ import annotations

import errno
import os

__all__ = ["describe", "os_error_in_chain"]

#: what to do, by errno, after "<what happened> <file>"
_OS_ADVICE = {
    errno.ENOSPC: (
        "no space left on the device holding",
        "free some space or choose another --out; a run that was training continues with "
        "--resume from its last checkpoint",
    ),
    errno.EDQUOT: (
        "disk quota exceeded for",
        "free some space or choose another --out; a run that was training continues with "
        "--resume from its last checkpoint",
    ),
    errno.EROFS: ("the file system is read-only at", "choose a writable --out"),
    errno.EACCES: ("permission denied for", "choose another --out or fix the permissions"),
    errno.EPERM: ("operation not permitted on", "choose another --out or fix the permissions"),
    errno.ENOTDIR: (
        "a part of this path is a file, not a folder:",
        "choose another --out (a folder, or a path that does not exist yet)",
    ),
    errno.EEXIST: (
        "a file (not a folder) is in the way:",
        "choose another --out (a folder, or a path that does not exist yet)",
    ),
    errno.EISDIR: ("a folder is in the way of a file:", "remove it or choose another --out"),
    errno.ENOENT: ("no such file or folder:", "check the path"),
}


def os_error_in_chain(exc: BaseException) -> OSError | None:
    """The first ``OSError`` among ``exc``, its ``__cause__`` and ``__context__`` chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e = e.__cause__ or e.__context__
    return None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]


def _describe_os_error(e: OSError) -> str:
    name = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        name = f"{name} -> {e.filename2}"
    what, todo = _OS_ADVICE.get(e.errno, (f"{e.strerror or os.strerror(e.errno)}:", ""))
    text = f"{what} {name}".rstrip(": ") if name else what.rstrip(": ")
    return f"{text} ({e.strerror}); {todo}" if todo else f"{text} ({e.strerror})"


#: names of structvae's own exception types whose message is written for the user
_OWN = ("CheckpointError", "DatasetNotFoundError", "DatasetCorruptError", "RunFolderError")


def describe(exc: BaseException) -> str:
    """A one-line message for ``exc``: what happened and, where known, what to do."""
    from .errors import SolverError

    if isinstance(exc, OSError) and exc.errno is not None:
        return _describe_os_error(exc)
    msg = _one_line(str(exc))
    own = isinstance(
        exc, (ValueError, FloatingPointError, SolverError, OSError)
    )  # OSError: no errno
    if own or type(exc).__name__ in _OWN:
        return msg
    os_err = os_error_in_chain(exc)  # e.g. torch.save's RuntimeError caused by ENOSPC
    if os_err is not None:
        return _describe_os_error(os_err)
    return (
        f"{type(exc).__name__}: {msg} (unexpected; rerun with --debug to see the traceback, "
        "and report it if structvae is at fault)"
    )
