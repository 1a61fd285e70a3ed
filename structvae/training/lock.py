"""One writer per run folder: an exclusive lock that a training process holds on its folder.

The lock is ``flock`` on ``<run folder>/.lock`` (the file also names the holder: pid and host).
The operating system releases it when the process ends, however it ends (``kill -9``
included), so a crashed run never leaves a stale lock. A second process training into the same
folder gets a :class:`RunFolderError` naming the holder. Platforms without ``fcntl`` (Windows)
and file systems without ``flock`` train without the lock (a warning says so).
"""

from __future__ import annotations

import errno
import os
import socket
import warnings
from pathlib import Path
from typing import ClassVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_FILE", "RunFolderError", "RunLock"]

LOCK_FILE = ".lock"


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (not a run, already a run, or in use by another
    process); the message says what to do."""


class RunLock:
    """The exclusive lock of one run folder; :meth:`acquire` it, :meth:`release` it when done."""

    #: the locks this process holds, by real folder path: claiming a folder again from the same
    #: process (a notebook re-running a cell, a test after a failed call) replaces the old claim
    _held: ClassVar[dict[str, RunLock]] = {}

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._key = os.path.realpath(self.folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (the folder must exist); :class:`RunFolderError` if another process
        holds it."""
        old = RunLock._held.get(self._key)
        if old is not None:
            old.release()
        if fcntl is None:  # pragma: no cover - Windows
            warnings.warn("no fcntl on this platform: the run folder is not locked", stacklevel=2)
            return self
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderError(
                    f"another process ({holder}) is training into {self.folder}; wait for it to "
                    "finish (or stop it), or choose another --out"
                ) from None
            warnings.warn(  # e.g. a network file system without flock
                f"cannot lock {self.folder} ({e.strerror}); make sure no other process "
                "trains into it",
                stacklevel=2,
            )
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        RunLock._held[self._key] = self
        return self

    @staticmethod
    def check_free(folder: str | os.PathLike) -> None:
        """:class:`RunFolderError` if another process holds ``folder``'s lock (takes nothing)."""
        folder = Path(folder)
        if fcntl is None or not (folder / LOCK_FILE).is_file():
            return
        mine = RunLock._held.get(os.path.realpath(folder))
        if mine is not None and mine.held:
            return
        probe = RunLock(folder).acquire()  # raises when held elsewhere
        probe.release()

    def release(self) -> None:
        """Give the lock up (the lock file stays; it is part of the run folder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if RunLock._held.get(self._key) is self:
            del RunLock._held[self._key]
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says ("pid 123 on host"), or a neutral phrase."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another structvae process"
