"""Write-then-rename helpers: a reader never sees a half-written output, and a crash never leaves one.

What a reader of ``path`` sees while :func:`atomic_path` puts a new version in place:

- a file: one ``rename(2)`` replaces it, so the path names the old file or the new one, never
  neither; a reader that opened the old file keeps reading the old file.
- a directory that exists: on Linux, ``renameat2(RENAME_EXCHANGE)`` swaps the new directory and
  the old one in one step, so the path always names a complete directory; a reader already
  inside the old one keeps its open files, but names it looks up afterwards may be gone (the old
  directory is deleted after the swap).
- a directory, where the exchange is not available (another OS or a file system without it):
  the old directory is renamed aside, then the new one in. Between the two renames the path does
  not exist: a reader gets FileNotFoundError and should retry.

Durability: before the rename, the new file (or every file and directory of the new directory)
is flushed to disk with ``fsync``, and the parent directory after it, so that after a crash the
path names the old output or the complete new one, not a renamed file whose data never reached
the disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; put it in place of `path` only if the block succeeds.

    The temporary lives in the same directory so the final rename is atomic on POSIX. Works for
    files and for directories (a directory target is replaced as a whole); the module docstring
    says what a reader sees meanwhile.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.is_dir() and tmp.is_dir():
            if not exchange(tmp, target):  # tmp now holds the old directory, removed below
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
                tmp.rename(target)  # between these two renames the path does not exist
                tmp = old
        else:
            os.replace(tmp, target)
        _fsync(target.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap what the paths ``a`` and ``b`` name, atomically (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``). False, having changed nothing, where the OS, the C library or the file
    system cannot; other errors raise OSError."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, f"exchanging {a} and {b}: {os.strerror(code)}")


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2``, or None."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory (the directories hold the names)."""
    if not path.is_dir():
        if path.exists():
            _fsync(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync(Path(root) / name)
        _fsync(Path(root))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory; the data is what matters
        if exc.errno not in (errno.EINVAL, errno.EBADF) or not path.is_dir():
            raise
    finally:
        os.close(fd)


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
