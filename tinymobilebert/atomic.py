"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the whole new
one, never half of one. Every file this package saves goes through ``atomic_write``."""

from __future__ import annotations

import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; the temp file is removed on failure.

    The temporary file sits in ``path``'s folder (a rename within one file system is atomic),
    is flushed to disk before the rename, and gets the permissions a plain ``open(path, "w")``
    would give it (mkstemp's are 0600).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` as UTF-8 with "\\n" line ends, atomically."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    atomic_write(path, write)
