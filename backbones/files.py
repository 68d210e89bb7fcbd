"""Writing files atomically, and telling what a file that is not a checkpoint holds.

Every file the library writes (the download cache, `save_weights`, `convnext-tf convert --out`)
goes to a temporary file beside its final path, renamed only when complete, with the mode an
ordinary `open()` would give it (the umask's).
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time

STALE_SECONDS = 3600  # temporary files untouched this long are left over from killed processes


def umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: str, suffix: str = "") -> str:
    """A new empty temporary file in `path`'s folder (created if needed), for an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files, which a shared cache cannot use
    return tmp


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary path to write; it becomes `path` when the block ends without an error."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path: str):
    """Yield a new temporary folder beside `path`; it replaces `path` (an old folder too) when the
    block ends without an error."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700 folders
        old = None
        if os.path.exists(path):  # the old folder goes only once the new one is complete
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.replace(path, os.path.join(old, "previous"))
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(folder: str, max_age: float = STALE_SECONDS) -> list[str]:
    """Remove temporary files of `temp_beside` in `folder` not written to for `max_age` seconds.

    A download in progress writes continually, so only the leftovers of killed processes go.
    """
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(folder), ".*.part*")):
        try:
            if time.time() - os.path.getmtime(tmp) > max_age:
                os.remove(tmp)
                removed.append(tmp)
        except OSError:  # removed meanwhile by another process
            pass
    return removed


def describe_content(path: str, content_type: str | None = None) -> str:
    """What a file holds, for an error: its size, the content type it came with, text it starts with."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(120)
    parts = [f"{size} bytes"]
    if content_type:
        parts.append(f"content type {content_type!r}")
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        parts.append(f"starting {head.decode('ascii')!r}: text, not a checkpoint")
    return ", ".join(parts)
