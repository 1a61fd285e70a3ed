"""Where dataset files live and how they are copied, extracted and downloaded."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from .errors import DatasetCorruptError

__all__ = [
    "default_cache_dir",
    "default_data_root",
    "default_file_mode",
    "is_current_copy",
    "write_extraction_record",
]

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


def default_file_mode() -> int:
    """The mode a newly created ordinary file gets here: ``0o666`` less the umask (0644 under
    the usual 022), read without changing the process's umask where ``/proc`` allows it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(dst: Path, write) -> None:
    """Create ``dst`` through a temporary file in its folder (``write(tmp_path)``), with ordinary
    permissions (:func:`default_file_mode`, not ``mkstemp``'s 0600), then rename it into place."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress ``src`` into ``dst`` atomically (a temporary file, then a rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out, gzip.open(src, "rb") as inp:
            try:
                shutil.copyfileobj(inp, out, 1 << 20)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise DatasetCorruptError(f"{src}: not a valid gzip file ({e})") from e

    _atomic_write(dst, write)


def _copy_atomic(src: Path, dst: Path) -> None:
    _atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


# ------------------------------------------------------------ extraction records


def _record_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.source.json")


def _fingerprint(src: Path) -> dict:
    st = src.stat()
    return {"source": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_extraction_record(src: Path, dst: Path) -> None:
    """Note next to ``dst`` (in ``.<name>.source.json``) which file it was made from: the
    source's path, size, modification time and MD5."""
    record = {**_fingerprint(src), "md5": _md5_file(src)}
    _atomic_write(_record_path(dst), lambda tmp: tmp.write_text(json.dumps(record) + "\n"))


def is_current_copy(src: Path, dst: Path) -> bool:
    """Whether ``dst`` is an up-to-date extraction (or copy) of ``src``.

    With a record (:func:`write_extraction_record`): the source must be the recorded file with
    the recorded size and time, or, when only its time changed, the recorded MD5. Without one
    (a file extracted by hand, by torchvision or by an older structvae): :func:`_plausible_copy`.
    """
    if not dst.is_file():
        return False
    try:
        record = json.loads(_record_path(dst).read_text())
    except (OSError, ValueError):
        return _plausible_copy(src, dst)
    now = _fingerprint(src)
    if not isinstance(record, dict) or record.get("source") != now["source"]:
        return False
    if record.get("size") == now["size"] and record.get("mtime_ns") == now["mtime_ns"]:
        return True
    if record.get("size") != now["size"] or record.get("md5") != _md5_file(src):
        return False
    try:  # the same bytes with a new time (touched, copied): remember the new time
        write_extraction_record(src, dst)
    except OSError:
        pass
    return True


def _download_url(url: str, folder: Path, filename: str, md5: str | None) -> None:
    """Indirection over torchvision's downloader (tests replace it)."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(folder), filename=filename, md5=md5)


def _download_target(root_dir: Path, cache_dir: Path, what: str) -> Path:
    if _writable_dir(root_dir):
        return root_dir
    logger.info("%s is not writable; downloading %s into the cache %s", root_dir, what, cache_dir)
    return cache_dir


def _plausible_copy(src: Path, dst: Path) -> bool:
    """Without a record: an extraction of a ``.gz`` must have the uncompressed size the archive
    states (its last four bytes, ISIZE); a plain copy the same size and a time no older."""
    size = dst.stat().st_size
    if src.suffix != ".gz":
        return size == src.stat().st_size and dst.stat().st_mtime >= src.stat().st_mtime
    try:
        with open(src, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
    except OSError:
        return False
    return size % (1 << 32) == isize
