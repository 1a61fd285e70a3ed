"""The two errors every dataset loader raises: files missing, or files malformed."""

from __future__ import annotations

__all__ = ["DatasetCorruptError", "DatasetNotFoundError", "HOW_TO"]

HOW_TO = (
    "Pass --download (download=True) on a machine with internet access, or --data-root "
    "(root=...) pointing at a folder that already holds the files."
)


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they are expected; the message says where."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but is malformed, truncated or fails its checksum.

    The message names the file and the problem, and ends with what to do about it."""

    ADVICE = (
        "replace it with a good copy: delete it and fetch it again with --download "
        "(download=True), or point --data-root (root=...) at a folder with intact files"
    )

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; {self.ADVICE}")
