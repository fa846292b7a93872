"""Atomic file writes: write to a temporary sibling, then ``os.replace`` it into place.

A killed or failing writer therefore never leaves a half-written file under the real name, and the
previous version (if any) stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _default_file_mode() -> int:
    """Mode ``open()`` would give a new file (0o666 minus the umask), read without changing the umask for long."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates 0o600 files; without a chmod every atomically written output would be private to
# its owner, unlike the same file written with open() (a shared cluster group could not read results).
_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path``; it replaces ``path`` only if the block succeeds.

    ``suffix`` is appended to the temporary name for writers that insist on an extension
    (``np.savez`` adds ``.npz`` otherwise). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, _FILE_MODE)
    try:
        yield tmp
        # Again: writers that replace the file rather than write into it (safetensors) create it 0o600.
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = "") -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: fsynced, then renamed into place if the block succeeds.

    An ``OSError`` while writing (a full disk: ENOSPC) is raised again naming ``path``, which the
    bare error from ``write(2)`` does not.
    """
    with atomic_path(path, suffix) as tmp, open(tmp, "wb") as fh:
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as err:
            if err.errno is None:
                raise
            raise OSError(err.errno, err.strerror, os.fspath(path)) from err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsynced before the rename); returns ``path``."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))
