"""dbt started warm: `analytics-dbt ARGS` is `dbt ARGS`, run in a process forked from a server
that has imported dbt already, instead of in a new Python that imports it first (most of what a
short dbt invocation costs: BENCHMARKS.md, "dbt started warm").

The first invocation finds no server: it starts one in the background and runs dbt as usual.
Later ones connect to the server's socket and hand over their arguments, environment, working
directory and standard streams; the server forks a child that becomes that `dbt`: same streams,
same exit status, SIGINT and SIGTERM sent to the command reach it, and a command killed outright
(a run worker's SIGKILL) takes its dbt along, so no dbt outlives its run holding the warehouse.
Each child starts from the server's imports only: nothing carries over between invocations.
The server holds no connection and no file, notes each command and how it ended in
`<socket>.log`, and leaves after IDLE_SECONDS without work. A server belongs to one interpreter
and one version of these sources (its socket's name hashes them): an upgrade or an edit starts a
new one.

    analytics-dbt build --select tag:realtime     # anything `dbt` takes
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

IDLE_SECONDS = 300
_held: list = []  # the server's lock file, closed in its children
# what a forked child would otherwise import itself (the CLI, the dev adapter, our plugin)
WARM_MODULES = (
    "dbt.cli.main",
    "dbt.task.build",
    "dbt.parser.manifest",
    "dbt.adapters.duckdb",
    "dbt.adapters.duckdb.impl",
    "analytics_assets.lib.warehouse.dbt_turns",
)
_SOURCES = ("dbt_warm.py", "warehouse/dbt_turns.py", "warehouse/turns.py", "errors.py")


def socket_path() -> Path:
    """The server's socket for this interpreter, its import path and these sources."""
    here = Path(__file__).resolve().parent
    stamp = [sys.executable, *sys.path]
    for name in _SOURCES:
        st = (here / name).stat()
        stamp.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
    dbt_dir = next(
        (Path(p) / "dbt" for p in sys.path if (Path(p) / "dbt/version.py").exists()), None
    )
    if dbt_dir is not None:
        stamp.append(str((dbt_dir / "version.py").stat().st_mtime_ns))
    digest = hashlib.sha1("\0".join(stamp).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"analytics-dbt-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{digest}.sock"


def dbt_command() -> str:
    """The plain `dbt` of this interpreter's environment."""
    return str(Path(sys.executable).parent / "dbt")


# -- the command ---------------------------------------------------------------------------------


def main() -> int:
    args = sys.argv[1:]
    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        start_server(path)
        os.execv(dbt_command(), [dbt_command(), *args])
    # the whole environment goes to the dbt it runs, as to any child process (no setting read)
    request = json.dumps({"args": args, "env": os.environ.copy(), "cwd": os.getcwd()}).encode()
    try:
        socket.send_fds(sock, [b"R"], [0, 1, 2])
        sock.sendall(struct.pack("!I", len(request)) + request)
        replies = sock.makefile("r")
        started = replies.readline()
    except OSError:
        started = ""
    if not started.startswith("pid "):  # the server left before starting it: nothing ran
        sock.close()
        os.execv(dbt_command(), [dbt_command(), *args])
    pid = int(started.split()[1])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    line = replies.readline()
    if not line.startswith("exit "):
        print("analytics-dbt: the warm dbt server went away mid-run", file=sys.stderr)
        return 1
    return int(line.split()[1])


def start_server(path: Path) -> None:
    """A server in the background, in its own session (it outlives this command)."""
    import subprocess

    subprocess.Popen(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "analytics_assets.lib.dbt_warm", "--serve", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )


def stop_server(path: Path | None = None) -> bool:
    """Ask the server (of `socket_path()` by default) to leave; True if one was there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path or socket_path()))
        socket.send_fds(sock, [b"S"], [])
        sock.recv(1)
        return True
    except OSError:
        return False
    finally:
        sock.close()


# -- the server ----------------------------------------------------------------------------------


def serve(path: Path) -> None:
    import fcntl
    import importlib
    import select
    import time

    lock = open(f"{path}.lock", "w")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server for the same socket is starting or running
    _held.append(lock)
    for module in WARM_MODULES:
        importlib.import_module(module)
    # dbt's locks are named semaphores: with the tracker started here, its children's are
    # cleaned up when the server leaves, not reported as leaked on each command's stderr
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    children: dict[int, tuple[socket.socket, list[str]]] = {}
    orphans: set[int] = set()  # children whose command went away
    log = open(f"{path}.log", "a", buffering=1)  # noqa: SIM115 - one line per command
    last_work = time.monotonic()
    try:
        while True:
            running = {conn: pid for pid, (conn, _) in children.items() if pid not in orphans}
            ready, _, _ = select.select([listener, *running], [], [], 0.05 if children else 1.0)
            for conn in ready:
                if conn is not listener:  # its command is gone (killed): its dbt goes too
                    orphans.add(running[conn])
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(running[conn], signal.SIGKILL)
            if listener in ready:
                conn, _ = listener.accept()
                kind, fds, _, _ = socket.recv_fds(conn, 1, 3)
                if kind != b"R":  # a stop, or a connection that only looked
                    conn.close()
                    if kind == b"S":
                        return
                    continue
                try:
                    pid, args = _fork(conn, fds, listener, [c for c, _ in children.values()])
                except (EOFError, OSError, ValueError):  # the command went away mid-request
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                children[pid] = (conn, args)
                # a command gone by now gets no reply: its end reads as closed, its dbt is killed
                with contextlib.suppress(OSError):
                    conn.sendall(f"pid {pid}\n".encode())
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                done, args = children.pop(pid)
                orphans.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                code = code if code >= 0 else 128 - code  # killed by a signal: as a shell says
                log.write(
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {pid} exit {code}: dbt "
                    f"{' '.join(args[:3])}\n"
                )
                with contextlib.suppress(OSError):
                    done.sendall(f"exit {code}\n".encode())
                done.close()
            if ready or children:
                last_work = time.monotonic()
            elif time.monotonic() - last_work > IDLE_SECONDS:
                return
    finally:
        listener.close()
        log.close()
        path.unlink(missing_ok=True)


def _fork(conn: socket.socket, fds: list[int], listener, others) -> tuple[int, list[str]]:
    """A child that runs the request of `conn` (its pid, the dbt arguments). `fds` are closed
    here once the child has them; a request that cannot be read raises, nothing forked."""
    (size,) = struct.unpack("!I", _read_exactly(conn, 4))
    request = json.loads(_read_exactly(conn, size))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            listener.close()
            for held in (*_held, *others):
                held.close()
            conn.close()
            for target, fd in zip((0, 1, 2), fds, strict=True):
                os.dup2(fd, target)
                os.close(fd)
            code = _become_dbt(request)
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    return pid, request["args"]


def _become_dbt(request: dict) -> int:
    import io

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.argv = ["dbt", *request["args"]]
    from dbt.cli.main import cli

    try:
        cli.main(args=request["args"], prog_name="dbt")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
    return code


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("the dbt command went away")
        data += chunk
    return data


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]))
    else:
        sys.exit(main())
