"""Turns on the dev DuckDB warehouse file, between processes that write it.

DuckDB lets one process at a time open a file for writing: it takes a POSIX lock on the whole
file and gives up at once if another process holds it. Two runs share the file (the lag-driven
fast path beside a model refresh or a backfill, dagster.yaml), so each writer opens it only for
its work (an ingest, a dbt step or, beside the fast path, one dbt node) and waits here for its
turn.

A turn is this process's own POSIX lock on the file, taken through a descriptor kept open while
DuckDB may hold the file: DuckDB's lock in the same process then succeeds, and POSIX drops both
when DuckDB closes its handle. Closing any descriptor of the file would drop them too, while
DuckDB still writes, so that descriptor stays open and copies of the file read through it
(`copy_out`).

A waiter announces itself with a shared lock on a sidecar file (`<file>.turns`). A process that
opens the file again and again (dbt with `keep_open: false`, node after node) is polite: when it
finds the file free and someone waiting, it lets them take it first, then waits in line. So the
fast path waits for one node of a refresh at most, and a refresh for one turn of the fast path
between its nodes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

POLL_SECONDS = 0.005  # a waiter's retry interval; a failed lock attempt is one system call
POLITE_MAX_SECONDS = 1.0  # a waiter that does not take the free file by then loses its place
MAX_KEPT = 32  # past this many, descriptors of files no connection holds are closed

_descriptors: dict[str, int] = {}
_guard = threading.Lock()


def _descriptor(path: Path) -> int:
    """This process's descriptor of the file `path`; a file replaced on disk gets a new one."""
    key = os.path.realpath(path)
    with _guard:
        fd = _descriptors.get(key)
        if fd is not None:
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(key))
            except FileNotFoundError:
                same = False
            if not same:  # the file was replaced: nothing opens the old one by this name
                os.close(fd)
                del _descriptors[key]
                fd = None
        if fd is None:
            if len(_descriptors) >= MAX_KEPT:
                _close_unused()
            fd = _descriptors[key] = os.open(key, os.O_RDWR | os.O_CLOEXEC)
        return fd


def _open_counts() -> dict[tuple[int, int], int]:
    """(device, inode) -> how many descriptors of this process have that file open."""
    counts: dict[tuple[int, int], int] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/self/fd/{name}")
            counts[st.st_dev, st.st_ino] = counts.get((st.st_dev, st.st_ino), 0) + 1
    return counts


def _open_elsewhere(fd: int, counts: dict[tuple[int, int], int] | None = None) -> bool:
    """Whether another descriptor of this process (DuckDB's) has the file of `fd` open."""
    st = os.fstat(fd)
    return (counts if counts is not None else _open_counts()).get((st.st_dev, st.st_ino), 0) > 1


def _close_unused() -> None:
    """Close the kept descriptors of files no DuckDB connection of this process holds: a test
    session opens many warehouses."""
    counts = _open_counts()
    for key, fd in list(_descriptors.items()):
        if not _open_elsewhere(fd, counts):
            os.close(fd)
            del _descriptors[key]


@contextlib.contextmanager
def _sidecar(path: Path) -> Iterator[int]:
    fd = os.open(f"{os.path.realpath(path)}.turns", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def _try(fd: int, kind: int) -> bool:
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid (padded)


def _held_by_another(fd: int) -> bool:
    """Whether another process holds a lock on the file of `fd` (F_GETLK: nothing is taken)."""
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    return struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0] != fcntl.F_UNLCK


def _someone_waiting(path: Path) -> bool:
    with _sidecar(path) as side:
        return not _try(side, fcntl.LOCK_EX)  # closing the sidecar lets go of the test lock


@contextlib.contextmanager
def _announced(path: Path) -> Iterator[None]:
    with _sidecar(path) as side:
        fcntl.lockf(side, fcntl.LOCK_SH)
        yield


def wait_turn(path: Path, timeout: float, *, shared: bool = False, polite: bool = False) -> bool:
    """Wait until this process may open the DuckDB file `path` (for reading only if `shared`),
    and hold it for the process until DuckDB closes the file (or `release`); False after
    `timeout` seconds. A file that does not exist yet is nobody's, and one this process has open
    already is its own: True at once."""
    path = Path(path)
    if not path.exists():
        return True
    deadline = time.monotonic() + timeout
    fd = _descriptor(path)
    if _open_elsewhere(fd):  # DuckDB in this process has it open: the lock is already ours
        return True
    if polite:  # while the file is free and someone waits, let them take it first
        polite_until = min(deadline, time.monotonic() + POLITE_MAX_SECONDS)
        while (
            time.monotonic() < polite_until and _someone_waiting(path) and not _held_by_another(fd)
        ):
            time.sleep(POLL_SECONDS)
    kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if _try(fd, kind):
        return True
    with _announced(path):
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            if _try(fd, kind):
                return True
    return False


def release(path: Path) -> None:
    """Give back a turn that was not used (DuckDB did not open the file after `wait_turn`)."""
    path = Path(path)
    if path.exists():
        fd = _descriptor(path)
        if not _open_elsewhere(fd):
            fcntl.lockf(fd, fcntl.LOCK_UN)


def copy_out(path: Path, target: Path) -> None:
    """Copy the DuckDB file `path` to `target` (fsynced) while this process has it open, reading
    through the kept descriptor: opening and closing another one would drop the lock."""
    fd = _descriptor(Path(path))
    size = os.fstat(fd).st_size
    with open(target, "wb") as out:
        copied = 0
        while copied < size:
            sent = os.sendfile(out.fileno(), fd, copied, size - copied)
            if sent == 0:
                break
            copied += sent
        out.flush()
        os.fsync(out.fileno())
