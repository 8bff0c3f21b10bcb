"""The Kafka-protocol broker goes away in the middle of an ingest: the ingest fails within bounded
time with one clear line (FeedError), and once the broker is back the next ingest resumes with
nothing lost and nothing applied twice.

The broker is a real tansu process of this test's own (the session broker stays untouched). The
vendored tansu build has only its in-memory storage (its postgres and sqlite engines are not
compiled in: `FeatureNotEnabled`), so restarting the process would lose the topics; the outage is
made on the network path instead: every client connection goes through a TCP relay on the
broker's advertised address, and "stopping the broker" closes the relay's listener and every open
connection (clients see what a broker restart looks like: disconnects, then connection refused),
"starting" it listens on the same port again. The `frozen` case instead stops the tansu process
with SIGSTOP (connections stay open, nothing answers) and resumes it with SIGCONT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import pytest
from kafka_helpers import KafkaEnv, free_port

from analytics_assets.dev import broker as dev_broker
from analytics_assets.lib.errors import FeedError

N_USERS = 40
BATCH = 6
REQUEST_TIMEOUT = 4.0  # the feed's bound on waiting for an unreachable broker


class Relay:
    """A TCP relay 127.0.0.1:<port> -> the broker, which can be cut and brought back."""

    def __init__(self, target: int):
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def broker():
    """Our own tansu broker behind a relay; yields (bootstrap, relay, process)."""
    port = free_port()
    relay = Relay(port)
    # clients reconnect through the relay
    proc = dev_broker.start_tansu(port, advertised_port=relay.port)
    relay.start()
    yield f"127.0.0.1:{relay.port}", relay, proc
    relay.stop()
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
    dev_broker.stop(proc)


def _workload(con) -> int:
    """N_USERS inserts in several transactions, updates and deletes: how many records."""
    for i in range(N_USERS):
        con.insert("users", email=f"r{i}@ex.com", country="DE")
        if i % 5 == 4:
            con.commit()
    con.commit()
    ids = con.ids("users")
    for row_id in ids[:10]:
        con.update("users", row_id, country="FR")
    for row_id in ids[10:15]:
        con.delete("users", row_id)
    con.commit()
    return con.produced


@pytest.mark.parametrize("outage", ["down_while_reading", "down_before_ack", "frozen"])
def test_broker_outage_mid_ingest_fails_cleanly_and_the_next_ingest_loses_nothing(
    source_db, tmp_path, broker, outage
):
    bootstrap, relay, proc = broker
    kenv = KafkaEnv(source_db, source_db.rsplit("/", 1)[1], tmp_path).configure(bootstrap)
    kenv.tables = ("users",)
    con = kenv.connector(partitions={"users": 2})
    try:
        produced = _workload(con)
    finally:
        con.close()

    def cut():
        if outage == "frozen":
            os.kill(proc.pid, signal.SIGSTOP)
        else:
            relay.stop()

    def restore():
        if outage == "frozen":
            os.kill(proc.pid, signal.SIGCONT)
        else:
            relay.start()

    batches = []

    def progress(p):
        batches.append(p)
        if len(batches) == 1 and outage != "down_before_ack":
            cut()

    applied = {"n": 0}

    def fault(stage):  # down_before_ack: batch 2 is committed in the warehouse, then no broker
        if stage == "applied":
            applied["n"] += 1
            if applied["n"] == 2 and outage == "down_before_ack":
                cut()

    feed = kenv.feed(request_timeout=REQUEST_TIMEOUT, idle_timeout=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(FeedError) as failed:
            kenv.ingest(batch_size=BATCH, feed=feed, progress=progress, fault=fault)
        took = time.monotonic() - started
    finally:
        restore()
    message = str(failed.value)
    assert "\n" not in message
    assert bootstrap in message and "re-run the ingest" in message, message
    assert took < 4 * REQUEST_TIMEOUT + 10, f"the failing ingest took {took:.0f}s"
    partial = kenv.raw("select count(*) from raw.users_changes")[0][0]
    assert 0 < partial < produced

    result = kenv.ingest(batch_size=BATCH, measure_lag=True)  # the broker is back
    assert result.caught_up
    assert result.tables["users"].lag_after.pending_changes == 0
    source = kenv.source_rows("users")
    raw = kenv.raw_rows("users")
    lost = set(source) - set(raw)
    extra = [r for r in raw if raw.count(r) > 1 or r not in source]
    assert (len(lost), len(extra)) == (0, 0)
    assert raw == source
    kenv.assert_change_log_has_no_duplicates()
    tombstones = 5  # one per delete
    assert kenv.raw("select count(*) from raw.users_changes") == [(produced - tombstones,)]
    assert kenv.group_committed() == kenv.high_watermarks()
