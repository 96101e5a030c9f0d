"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the whole new
one, never half of one. Every file this package saves goes through ``atomic_write`` (figures through
``save_figure``).

A write killed between creating its temporary file and the rename leaves that temporary file
behind. Its name says whose it was (``.{name}.{pid}.{random}.tmp``), so
``remove_stale_temp_files`` can delete the leftovers of processes that no longer run.
"""

from __future__ import annotations

import os
import re
import tempfile

_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")  # .{name}.{pid}.{random}.tmp


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
    prefix = f".{os.path.basename(path)}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
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


def save_figure(fig, path, **savefig_kwargs) -> str:
    """``fig.savefig(path, **savefig_kwargs)``, atomically: a crash mid-write leaves the old image.

    The image goes to a temporary file beside ``path``, so matplotlib cannot tell the format from
    its name: it is passed as ``format``, taken from ``savefig_kwargs``, else ``path``'s extension,
    else matplotlib's ``savefig.format`` (png). ``path``'s folder is created if missing. Returns
    ``path``.
    """
    path = os.fspath(path)
    fmt = savefig_kwargs.pop("format", None) or os.path.splitext(path)[1][1:].lower() or None
    if fmt is None:
        import matplotlib

        fmt = matplotlib.rcParams["savefig.format"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs))
    return path


def is_temp_name(name: str) -> bool:
    """Whether a file name is one ``atomic_write`` gives its temporary files."""
    return _TEMP_FILE.match(name) is not None


def process_is_running(pid: int) -> bool:
    """Whether a process with this id exists (a temp file of a live process is not stale)."""
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill terminates: never probe, never remove
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover - platforms without signal 0 semantics
        return True
    return True


def remove_stale_temp_files(folder) -> list[str]:
    """Delete the temporary files that killed ``atomic_write`` calls left in ``folder``.

    Only files named as ``atomic_write`` names them, of processes no longer running, are
    removed. Returns their paths.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        match = _TEMP_FILE.match(name)
        path = os.path.join(folder, name)
        if match and os.path.isfile(path) and not process_is_running(int(match.group(1))):
            os.remove(path)
            removed.append(path)
    return removed
