"""Turns on the dev DuckDB warehouse file, between processes that write it.

DuckDB lets one process at a time open a file for writing: it takes a POSIX lock on the whole
file and gives up at once if another process holds it. Several runs share the file (the
lag-driven fast path beside a model refresh or a backfill, dagster.yaml), so each writer opens
it only for its work (an ingest, a dbt step or, beside the fast path, one dbt node) and waits
here for its turn: it tries to open the file every few milliseconds until DuckDB lets it.

A waiter announces itself with a shared lock on a sidecar file (`<file>.turns`). A process that
opens the file again and again (dbt with `keep_open: false`, node after node) is polite: when it
finds the file free and someone waiting, it lets them take it first, then waits in line. So the
fast path waits for one node of a refresh at most, and a refresh for one turn of the fast path
between its nodes.

POSIX drops every lock a process holds on a file when it closes any descriptor of that file, so
a process that has the warehouse open never opens and closes the file itself: `copy_out` reads
through DuckDB's own descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

POLL_SECONDS = 0.005  # a waiter's retry interval; a refused open costs DuckDB a few system calls
POLITE_MAX_SECONDS = 1.0  # a waiter that does not take the free file by then loses its place
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid (padded)


class Refused(Exception):
    """No turn within the timeout; the message is DuckDB's, naming the holder."""


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


@contextlib.contextmanager
def _sidecar(path: Path) -> Iterator[int]:
    fd = os.open(f"{os.path.realpath(path)}.turns", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def _someone_waiting(path: Path) -> bool:
    with _sidecar(path) as side:
        try:
            fcntl.lockf(side, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return True
            raise
        return False  # closing the sidecar lets go of the test lock


@contextlib.contextmanager
def _announced(path: Path) -> Iterator[None]:
    with _sidecar(path) as side:
        fcntl.lockf(side, fcntl.LOCK_SH)
        yield


def _held_by_another(path: Path) -> bool:
    """Whether another process holds the file (F_GETLK: nothing is taken). Only called while
    this process does not have it open, so closing the probe's descriptor loses nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        return struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def connect(
    path: Path,
    timeout: float,
    *,
    read_only: bool = False,
    polite: bool = False,
    config: dict[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file `path` once it is this process's turn; `Refused` after `timeout`
    seconds. `polite`: first let an announced waiter take the file if it is free."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    if polite and path.exists():
        until = min(deadline, time.monotonic() + POLITE_MAX_SECONDS)
        while time.monotonic() < until and _someone_waiting(path) and not _held_by_another(path):
            time.sleep(POLL_SECONDS)
    with contextlib.ExitStack() as waiting:
        announced = False
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only, config=config or {})
            except duckdb.IOException as exc:
                if not _is_lock_conflict(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise Refused(str(exc)) from None
            if not announced:  # in line from the first refusal on
                waiting.enter_context(_announced(path))
                announced = True
            time.sleep(POLL_SECONDS)


def copy_out(path: Path, target: Path) -> None:
    """Copy the DuckDB file `path` to `target` (fsynced). While this process has it open, read
    through DuckDB's own descriptor: opening and closing another would drop DuckDB's lock."""
    path = Path(path)
    st = os.stat(path)
    own = None
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(f"/proc/self/fd/{name}"), st):
                own = int(name)
                break
    if own is None:
        shutil.copyfile(path, target)
    else:
        with open(target, "wb") as out:
            copied, size = 0, os.fstat(own).st_size
            while copied < size:
                sent = os.sendfile(out.fileno(), own, copied, size - copied)
                if sent == 0:
                    break
                copied += sent
    with open(target, "rb+") as out:
        os.fsync(out.fileno())
