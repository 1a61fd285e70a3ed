"""Checkpoint files: atomic writes and safe (``weights_only``) loads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..failures import os_error_in_chain

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or incompatible; the message names it."""


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` atomically: a temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as "unexpected pos"
        err = os_error_in_chain(e)
        if err is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from e  # names the checkpoint
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: torch's weights_only unpickler: a global (class or function) that it will not import
_UNSAFE = re.compile(r"unsupported global|GLOBAL \S+ (whose|was not)", re.IGNORECASE)


def _unsafe_detail(e: Exception) -> str:
    for line in str(e).splitlines():
        if _UNSAFE.search(line):
            return line.strip().rstrip(".")
    return type(e).__name__  # pragma: no cover


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a bad file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        if _UNSAFE.search(str(e)):
            raise CheckpointError(
                f"checkpoint {path} was refused as unsafe: it holds Python objects other than "
                f"tensors and plain data ({_unsafe_detail(e)}), which structvae never writes; "
                "loading it could run arbitrary code, so it is not loaded"
            ) from e
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be loaded "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "delete it (and resume from another copy) or start the run afresh"
        ) from e
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"checkpoint {path} is not a structvae checkpoint (no 'model' entry)")
    return obj
