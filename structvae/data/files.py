"""Where dataset files live and how they are copied, extracted and downloaded."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from .errors import DatasetCorruptError

__all__ = ["default_cache_dir", "default_data_root"]

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$STRUCTVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/structvae``, else ``~/.cache/structvae``."""
    env = os.environ.get("STRUCTVAE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "structvae"


def default_data_root() -> Path:
    """``$STRUCTVAE_DATA_ROOT``, else ``<default_cache_dir()>/data``."""
    env = os.environ.get("STRUCTVAE_DATA_ROOT")
    return Path(env).expanduser() if env else default_cache_dir() / "data"


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _writable_dir(path: Path) -> bool:
    """Whether files may be created in ``path`` (or its nearest existing ancestor).

    Besides ``os.access`` this honours the permission bits, so that a folder marked
    read-only (no ``w`` bit) is left alone even by a process running as root.
    """
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    if not p.is_dir():
        return False
    return bool(p.stat().st_mode & 0o222) and os.access(p, os.W_OK)


def _cache_slot(cache: Path, name: str, root: Path) -> Path:
    """The cache folder for ``name`` read from ``root`` (one per source folder)."""
    digest = hashlib.sha1(str(root.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    return cache / name / digest


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress ``src`` into ``dst`` atomically (a temporary file, then a rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            try:
                shutil.copyfileobj(inp, out, 1 << 20)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise DatasetCorruptError(f"{src}: not a valid gzip file ({e})") from e
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_url(url: str, folder: Path, filename: str, md5: str | None) -> None:
    """Indirection over torchvision's downloader (tests replace it)."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(folder), filename=filename, md5=md5)


def _download_target(root_dir: Path, cache_dir: Path, what: str) -> Path:
    if _writable_dir(root_dir):
        return root_dir
    logger.info("%s is not writable; downloading %s into the cache %s", root_dir, what, cache_dir)
    return cache_dir
