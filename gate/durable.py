"""The one atomic-write helper: durable, private files.

Key files (template keyring, grant-signing keys), the persisted index and prepared model
files are written the same way: a temporary file in the target folder (0600), the bytes,
``fsync``, ``os.replace`` and an ``fsync`` of the folder. A crash leaves either the old
file or the new one, never half of one; nobody else can read it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) 0700; tighten an existing folder we own to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, PRIVATE_DIR_MODE)
    except PermissionError:  # not ours (e.g. /tmp): leave it
        pass
    return path


def temp_beside(path: Path) -> Path:
    """A new, empty 0600 temporary file in ``path``'s folder (the caller renames it)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, PRIVATE_FILE_MODE)
    os.close(fd)
    return Path(name)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Atomically replace ``path`` with ``data`` (0600; file and folder fsync'd)."""
    private_dir(path.parent)
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_private(path: Path, text: str) -> None:
    """``atomic_write`` of text (kept for the key files' callers)."""
    atomic_write(path, text)


def fsync_path(path: Path) -> None:
    """fsync a file's contents, or a folder's entries (making a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
