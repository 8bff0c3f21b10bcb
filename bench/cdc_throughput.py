"""CDC throughput: how close the project's decode + apply path gets to the raw pgoutput rate.

Loads N row changes (inserts, updates, deletes; transactions of 10k) into a scratch database on
its own embedded server (temp ANALYTICS_DATA_DIR), then measures, each in a fresh child process:

  (a) raw: the server hands pgoutput bytes to a plain Python client, no decoding. Three
      transports: one COPY of pg_logical_slot_peek_binary_changes, psycopg2's streaming
      replication protocol, and the slot feed's own reader (LSN ranges peeked from temporary
      slot copies by two sessions taking turns); the fastest one is the reference.
  (b) end to end: `analytics_assets.lib.cdc.ingest` into a DuckDB file (decode, stage, merge,
      change log, state, commit, ack) with the default batch size.

Prints both rates and their ratio (target >= 0.5), and the ingest's peak RSS. The machine is noisy,
so the raw COPY and the ingest each run --repeat times, taking turns (default 3; the ingest from
the same slot position and warehouse file each time), and the fastest run of each is compared;
each pair's ratio is printed beside it. Also prints the
CPU seconds of this client and of the server during the raw COPY and the ingest, and the floor
that the ingest's CPU puts on its time with every core busy (core-seconds / cores) against the
time the 0.5 target allows. Batches default to the CDC_BATCH_SIZE default (50k); 200k measured no
faster here and used more memory.

Then (c) the Kafka path through the same ingest: bench/kafka_throughput.py's measurement (Debezium
events for orders on a local tansu broker; raw confluent-kafka consume vs KafkaFeed -> DuckDB) in
a child process, after the slot measurements, so one run shows both feeds (`--kafka-records 0`
skips it; the --backlog run skips it).

    python bench/cdc_throughput.py                     # 500k changes
    python bench/cdc_throughput.py --backlog 2000000   # peak RSS for a 2M-change backlog
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SLOT, PUB, RAW_SLOT = "bench_slot", "bench_pub", "bench_raw_slot"
TABLES = ["users", "products", "orders", "order_items"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(
    url: str, changes: int, txn_size: int = 10_000, running_xacts_every: int = 0
) -> dict[str, int]:
    """Mixed workload on orders: per transaction 60% inserts, 25% updates, 15% deletes. With
    `running_xacts_every`, the server logs a running-transactions record after every that many
    changes (`pg_log_standby_snapshot`), as its background writer does every 15 s of writes: a
    backlog built up over minutes has them, one written within seconds has none."""
    import psycopg2

    conn = psycopg2.connect(url)
    cur = conn.cursor()
    counts = {"c": 0, "u": 0, "d": 0}
    next_id, upd_id, del_id = 1, 1, 1
    done = 0
    while done < changes:
        n = min(txn_size, changes - done)
        ins, upd = int(n * 0.6), int(n * 0.25)
        dele = n - ins - upd
        cur.execute(
            "insert into orders (id, user_id, total, status, created_at) "
            "select g, g %% 5000, (g %% 100000) / 100.0, 'new', "
            "timestamptz '2026-01-01' + (g %% 90) * interval '1 day' + (g %% 86400) * interval '1 second' "
            "from generate_series(%s, %s) g",
            (next_id, next_id + ins - 1),
        )
        next_id += ins
        # update rows that exist and are not deleted: ids after the deleted range
        upd_id = max(upd_id, del_id)
        cur.execute(
            "update orders set status = 'paid', paid_at = now(), updated_at = now() "
            "where id between %s and %s",
            (upd_id, upd_id + upd - 1),
        )
        upd_id += upd
        cur.execute("delete from orders where id between %s and %s", (del_id, del_id + dele - 1))
        del_id += dele
        conn.commit()
        counts["c"] += ins
        counts["u"] += cur.rowcount and upd
        counts["d"] += dele
        if running_xacts_every and (done + n) // running_xacts_every > done // running_xacts_every:
            cur.execute("select pg_log_standby_snapshot()")
        done += n
    cur.execute("select setval('orders_id_seq', %s)", (next_id,))
    conn.commit()
    conn.close()
    return counts


# -- children -------------------------------------------------------------------------------------


def child_raw_copy(url: str) -> dict:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()

    class Sink:
        pass

    rows: list[bytes] = []
    sink = Sink()
    sink.write = rows.append
    from _common import CpuMeter

    cpu = CpuMeter()
    cpu.start()
    t0 = time.perf_counter()
    query = sql.SQL(
        "copy (select data from pg_logical_slot_peek_binary_changes({}, null, null, "
        "'proto_version', '1', 'publication_names', {})) to stdout with (format binary)"
    ).format(sql.Literal(RAW_SLOT), sql.Literal(PUB))
    cur.copy_expert(query.as_string(conn), sink)
    seconds = time.perf_counter() - t0
    cpu_s = cpu.stop()
    changes = sum(1 for r in rows[1:] if r[6:7] in (b"I", b"U", b"D"))
    changes += rows[0][25:26] in (b"I", b"U", b"D")
    nbytes = sum(map(len, rows))
    return {
        "changes": changes,
        "seconds": seconds,
        "bytes": nbytes,
        "rss_mb": _peak_rss_mb(),
        **cpu_s,
    }


def child_raw_stream(url: str, expected: int) -> dict:
    import psycopg2
    import psycopg2.extras

    conn = psycopg2.connect(url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(
        slot_name=RAW_SLOT,
        decode=False,
        options={"proto_version": "1", "publication_names": PUB},
    )
    state = {"changes": 0, "bytes": 0}

    class Done(Exception):
        pass

    def consume(msg):
        state["bytes"] += len(msg.payload)
        if msg.payload[:1] in (b"I", b"U", b"D"):
            state["changes"] += 1
            if state["changes"] >= expected:
                raise Done

    t0 = time.perf_counter()
    try:
        cur.consume_stream(consume)
    except Done:
        pass
    seconds = time.perf_counter() - t0
    conn.close()
    return {**state, "seconds": seconds, "rss_mb": _peak_rss_mb()}


def child_raw_ranged(url: str) -> dict:
    """The slot feed's own transport (SlotFeed's peek reader: LSN ranges peeked by two sessions
    taking turns) handing pgoutput bytes to Python, without decoding them."""
    import psycopg2

    from analytics_assets.lib.feeds import slot_reader
    from analytics_assets.lib.feeds.base import parse_lsn

    conn = psycopg2.connect(url)
    cur = conn.cursor()
    cur.execute(
        "select confirmed_flush_lsn::text, pg_current_wal_insert_lsn()::text "
        "from pg_replication_slots where slot_name = %s",
        (RAW_SLOT,),
    )
    start, upto = (parse_lsn(x) for x in cur.fetchone())
    conn.close()
    state = {"changes": 0, "bytes": 0}

    def count(rows: list[bytes]) -> None:
        state["changes"] += sum(1 for r in rows if r[6:7] in (b"I", b"U", b"D"))
        state["bytes"] += sum(map(len, rows))

    t0 = time.perf_counter()
    ranges = slot_reader.peek_ranges(
        start,
        upto,
        slot_reader.PEEK_RANGE_FIRST,
        slot_reader.PEEK_RANGE_GROWTH,
        slot_reader.PEEK_RANGE_MAX,
    )
    reader = slot_reader.PeekReader(url, RAW_SLOT, PUB, ranges, 50_000, count)
    reader.start()
    reader.next_chunk()  # _DONE: every range handed over
    seconds = time.perf_counter() - t0
    reader.stop()
    return {**state, "seconds": seconds, "ranges": len(reader.ranges), "rss_mb": _peak_rss_mb()}


def child_ingest(
    url: str,
    warehouse: str,
    batch_size: int,
    duckdb_memory: str = "",
    duckdb_set: str = "",
    single_peek: str = "",
) -> dict:
    import pandas  # noqa: F401 - pyarrow imports it lazily on first use (~1 s); Dagster has it loaded

    if single_peek:  # the backlog as one peek, as before the ranged read (for comparison)
        from analytics_assets.lib.feeds import slot_reader

        slot_reader.PEEK_RANGE_FIRST = 1 << 62

    from analytics_assets.lib.cdc import ingest
    from analytics_assets.lib.feeds.slot import SlotFeed
    from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse, ingest_memory_limit

    feed = SlotFeed(url, slot=SLOT, publication=PUB, tables=TABLES)
    import pyarrow as pa

    # as make_warehouse does: a memory_limit proportional to the batch size ("none": DuckDB's own)
    memory = duckdb_memory or ingest_memory_limit(batch_size)
    wh = DuckDBWarehouse(warehouse, memory_limit=None if memory == "none" else memory)
    for setting in filter(None, duckdb_set.split(";")):
        wh.con.execute(f"set {setting}")
    base_rss = _peak_rss_mb()
    from _common import CpuMeter

    cpu = CpuMeter()
    cpu.start()
    t0 = time.perf_counter()
    arrow_peak = [0]
    applies: list[float] = []
    first_at: list[float] = []

    def progress(info: dict) -> None:
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
        if info["changes"]:
            applies.append(info["apply_seconds"])
            if not first_at:
                first_at.append(time.perf_counter() - t0)
        if os.environ.get("CDC_BENCH_VERBOSE"):
            print(f"{time.perf_counter() - t0:7.2f}s {info}", file=sys.stderr, flush=True)

    result = ingest(
        feed=feed, warehouse=wh, batch_size=batch_size, measure_lag=False, progress=progress
    )
    seconds = time.perf_counter() - t0
    cpu_s = cpu.stop()
    rows = wh.con.execute("select count(*) from raw.orders").fetchone()[0]
    wh.close()
    return {
        "changes": result.changes,
        "batches": result.batches,
        "seconds": seconds,
        "rss_mb": _peak_rss_mb(),
        "rss_before_mb": base_rss,
        "arrow_peak_mb": arrow_peak[0] / 2**20,
        "apply_median_s": sorted(applies)[len(applies) // 2] if applies else 0.0,
        "apply_total_s": sum(applies),
        "first_batch_s": first_at[0] if first_at else 0.0,
        "raw_rows": rows,
        **cpu_s,
    }


def child_kafka(records: int, batch_size: int) -> dict:
    from kafka_throughput import measure

    return measure(records, 3, batch_size, echo=lambda line: print(line, file=sys.stderr))


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if os.environ.get("CDC_BENCH_VERBOSE"):
        print(out.stderr, file=sys.stderr)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _settle(url: str) -> None:
    """Vacuum the loaded table and checkpoint, so autovacuum and the checkpointer (whose CPU the
    server's figures would include) do not run during one side's measurement only."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("vacuum analyze orders")
    conn.cursor().execute("checkpoint")
    conn.close()


@contextlib.contextmanager
def _restorable(url: str, warehouse: str):
    """Yields restore(): puts the project's slot and the warehouse file back as they are now."""
    import psycopg2

    tmpl = SLOT + "_tmpl"
    saved = Path(warehouse + ".saved")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("select pg_copy_logical_replication_slot(%s, %s)", (SLOT, tmpl))
    shutil.copyfile(warehouse, saved)

    def restore() -> None:
        cur.execute("select pg_drop_replication_slot(%s)", (SLOT,))
        cur.execute("select pg_copy_logical_replication_slot(%s, %s)", (tmpl, SLOT))
        shutil.copyfile(saved, warehouse)
        Path(warehouse + ".wal").unlink(missing_ok=True)

    try:
        yield restore
    finally:
        cur.execute("select pg_drop_replication_slot(%s)", (tmpl,))
        conn.close()
        saved.unlink(missing_ok=True)


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    from _common import Result, scratch_stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=500_000)
    parser.add_argument("--backlog", type=int, default=None, help="changes for the RSS run")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument(
        "--duckdb-memory",
        default="",
        help="DuckDB memory_limit for the ingest (default: the adapter's ingest_memory_limit for "
        "the batch size, as make_warehouse sets it; 'none': DuckDB's own, 80%% of RAM)",
    )
    parser.add_argument(
        "--kafka-records",
        type=int,
        default=None,
        help="Debezium events for the Kafka path (default 100k, 20k with --quick; 0 skips)",
    )
    parser.add_argument(
        "--duckdb-set",
        default="",
        help="extra DuckDB settings for the ingest connection, e.g. 'threads=2;"
        "preserve_insertion_order=false' (to compare with the adapter's own)",
    )
    parser.add_argument(
        "--single-peek",
        action="store_true",
        help="the ingest reads the backlog as one peek instead of LSN ranges (to compare)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of the raw COPY and of the ingest; the fastest of each is compared",
    )
    parser.add_argument(
        "--running-xacts-every",
        type=int,
        default=0,
        help="the load has a running-transactions record after every N changes, as a backlog "
        "built up over minutes has one every 15 s (default 0: none, a backlog written in seconds)",
    )
    parser.add_argument("--quick", action="store_true", help="100k changes (20k on Kafka)")
    parser.add_argument("--json", default=None, help="also write the result record here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "copy":
            res = child_raw_copy(rest[0])
        elif kind == "kafka":
            res = child_kafka(int(rest[0]), int(rest[1]))
        elif kind == "stream":
            res = child_raw_stream(rest[0], int(rest[1]))
        elif kind == "ranged":
            res = child_raw_ranged(rest[0])
        else:
            res = child_ingest(rest[0], rest[1], int(rest[2]), *rest[3:6])
        print(json.dumps(res))
        return res

    changes = args.backlog or (100_000 if args.quick else args.changes)
    title = f"CDC apply ({changes:,}-change backlog)"
    result = Result("cdc_backlog" if args.backlog else "cdc_apply", title)
    if args.running_xacts_every:
        result.note(
            f"the load has a running-transactions record every {args.running_xacts_every:,} "
            "changes (--running-xacts-every)"
        )
    load_avg = os.getloadavg()[0]
    with scratch_stack("cdc_bench_") as scratch:
        import psycopg2

        from analytics_assets.dev.schema import migrate

        url = scratch["urls"]["bench"]
        conn = psycopg2.connect(url)
        migrate(conn)
        conn.close()
        warehouse = str(scratch["dir"] / "bench.duckdb")
        # the project's slot + snapshot of the (empty) tables, and a second slot at the same
        # point for the raw measurements
        run_child("ingest", url, warehouse, str(args.batch_size))
        conn = psycopg2.connect(url)
        conn.autocommit = True
        conn.cursor().execute(
            "select pg_create_logical_replication_slot(%s, 'pgoutput')", (RAW_SLOT,)
        )
        conn.close()
        t0 = time.perf_counter()
        loaded = load(url, changes, running_xacts_every=args.running_xacts_every)
        load_s = time.perf_counter() - t0
        print(
            f"loaded {changes:,} row changes ({loaded['c']:,} inserts, {loaded['u']:,} "
            f"updates, {loaded['d']:,} deletes) in {load_s:.1f}s"
        )
        _settle(url)
        # the machine is noisy: each side is measured `repeat` times and its fastest run is
        # compared (the raw peek does not consume the slot; the ingest starts each time from a
        # copy of the project's slot and of the warehouse file as they were after the snapshot).
        # The two sides take turns, so a change in the machine's speed during the run slows
        # both alike; each pair's ratio is printed too.
        copies, runs = [], []
        with _restorable(url, warehouse) as restore:
            for i in range(args.repeat):
                copies.append(run_child("copy", url))
                if i:
                    restore()
                runs.append(
                    run_child(
                        "ingest",
                        url,
                        warehouse,
                        str(args.batch_size),
                        args.duckdb_memory,
                        args.duckdb_set,
                        "1" if args.single_peek else "",
                    )
                )
                load_avg = max(load_avg, os.getloadavg()[0])
        raw_copy = min(copies, key=lambda r: r["seconds"])
        # after the COPY runs: the streaming protocol's client may confirm what it read
        raw_stream = run_child("stream", url, str(raw_copy["changes"]))
        raw_ranged = run_child("ranged", url)
        pairs = sorted(c["seconds"] / r["seconds"] for c, r in zip(copies, runs, strict=True))
        e2e = min(runs, key=lambda r: r["seconds"])

        def secs(rs: list[dict]) -> str:
            return ", ".join(f"{r['seconds']:.2f}" for r in rs)

        print(
            f"runs, in turn: raw COPY {secs(copies)} s; end to end {secs(runs)} s "
            "(the fastest of each is compared); each pair's end to end / raw "
            f"{', '.join(f'{x:.3f}' for x in pairs)}"
        )

    kafka_records = args.kafka_records
    if kafka_records is None:
        kafka_records = 0 if args.backlog else (20_000 if args.quick else 100_000)
    kafka = run_child("kafka", str(kafka_records), str(args.batch_size)) if kafka_records else None

    from analytics_assets.lib.warehouse.duckdb import ingest_memory_limit

    memory_default = f"{ingest_memory_limit(args.batch_size)} (ingest_memory_limit)"
    rate = {
        "copy": raw_copy["changes"] / raw_copy["seconds"],
        "stream": raw_stream["changes"] / raw_stream["seconds"],
        "ranged": raw_ranged["changes"] / raw_ranged["seconds"],
    }
    best = max(rate, key=rate.get)
    e2e_rate = e2e["changes"] / e2e["seconds"]
    print(
        f"(a) raw pgoutput to Python, COPY of slot peek : {rate['copy']:>10,.0f} changes/s "
        f"({raw_copy['bytes'] / raw_copy['seconds'] / 1e6:,.0f} MB/s)"
    )
    print(f"    raw pgoutput to Python, streaming protocol: {rate['stream']:>10,.0f} changes/s")
    print(
        f"    raw pgoutput to Python, the feed's ranged peeks ({raw_ranged['ranges']} ranges, "
        f"two sessions): {rate['ranged']:>10,.0f} changes/s"
    )
    print(
        f"(b) end to end into DuckDB (ingest)          : {e2e_rate:>10,.0f} changes/s "
        f"({e2e['changes']:,} changes, {e2e['batches']} batches of <= {args.batch_size:,}, "
        f"{e2e['seconds']:.2f}s)"
    )
    print(
        f"    per batch: apply median {e2e['apply_median_s']:.3f}s, apply total "
        f"{e2e['apply_total_s']:.2f}s; first batch applied at {e2e['first_batch_s']:.2f}s "
        f"(a peek is materialized server-side before its first row arrives; the feed peeks a "
        f"large backlog in ranges)"
    )
    print(
        f"ingest peak RSS: {e2e['rss_mb']:,.0f} MB for a {changes:,}-change backlog "
        f"(process before ingest: {e2e['rss_before_mb']:,.0f} MB; batch size {args.batch_size:,}; "
        f"peak Arrow allocations {e2e['arrow_peak_mb']:,.0f} MB; DuckDB memory_limit "
        f"{args.duckdb_memory or memory_default})"
    )
    # where the time goes: CPU of this client and of the server, against what the cores allow
    cores = os.cpu_count() or 1
    e2e_cpu = e2e["client_cpu_s"] + e2e["server_cpu_s"]
    floor_s = e2e_cpu / cores  # no schedule on these cores finishes sooner
    allowed_s = e2e["changes"] / (0.5 * rate[best])  # the e2e time the 0.5 target allows
    print(
        f"CPU: raw COPY client {raw_copy['client_cpu_s']:.2f}s + server "
        f"{raw_copy['server_cpu_s']:.2f}s; end to end client {e2e['client_cpu_s']:.2f}s + server "
        f"{e2e['server_cpu_s']:.2f}s = {e2e_cpu:.2f} core-s, so at least {floor_s:.2f}s on "
        f"{cores} cores with every core busy; the 0.5 target allows {allowed_s:.2f}s"
    )
    result.figure("row changes", changes)
    result.figure("batch size", args.batch_size)
    result.figure("raw pgoutput, COPY of slot peek (changes/s)", round(rate["copy"]))
    result.figure("raw pgoutput, streaming protocol (changes/s)", round(rate["stream"]))
    result.figure("raw pgoutput, the feed's ranged peeks (changes/s)", round(rate["ranged"]))
    result.figure("end to end into DuckDB (changes/s)", round(e2e_rate))
    result.figure("end to end s", round(e2e["seconds"], 2))
    result.figure("apply per batch, median s", round(e2e["apply_median_s"], 3))
    result.figure("first batch applied at s", round(e2e["first_batch_s"], 2))
    result.figure("ingest peak RSS MB", round(e2e["rss_mb"]))
    result.figure("process RSS before ingest MB", round(e2e["rss_before_mb"]))
    result.figure("raw COPY: client CPU s", round(raw_copy["client_cpu_s"], 2))
    result.figure("raw COPY: server CPU s", round(raw_copy["server_cpu_s"], 2))
    result.figure("end to end: client CPU s", round(e2e["client_cpu_s"], 2))
    result.figure("end to end: server CPU s", round(e2e["server_cpu_s"], 2))
    result.figure(f"end to end: CPU floor on {cores} cores s (core-s / cores)", round(floor_s, 2))
    result.figure("end to end: s the 0.5 target allows", round(allowed_s, 2))
    result.figure("load average (1 min, max seen)", round(load_avg, 2))
    if args.backlog:
        result.record["title"] = (
            f"CDC backlog of {changes:,} changes: ingest peak RSS {e2e['rss_mb']:,.0f} MB "
            f"(batch {args.batch_size:,})"
        )
    result.ratio(f"end to end / raw ({best})", e2e_rate / rate[best], 0.5, "higher")
    result.ratio(
        "CPU floor / s the target allows (above 1: out of reach on these cores)",
        floor_s / allowed_s,
        None,
    )
    if e2e["raw_rows"] != loaded["c"]:
        result.note(f"WARNING: raw.orders has {e2e['raw_rows']:,} rows, expected {loaded['c']:,}")
    if kafka is not None:
        print(
            f"(c) Kafka path (Debezium topics, local tansu broker): end to end "
            f"{kafka['e2e_changes_per_s']:,.0f} changes/s ({kafka['changes']:,} changes, "
            f"{kafka['e2e_seconds']:.2f}s); raw consume {kafka['raw_records_per_s']:,.0f} records/s; "
            f"ratio (records/s) {kafka['ratio']:.2f}"
        )
        result.figure(
            "Kafka path: end to end into DuckDB (changes/s)", round(kafka["e2e_changes_per_s"])
        )
        result.figure("Kafka path: raw consume (records/s)", round(kafka["raw_records_per_s"]))
        result.figure("Kafka path: end to end / raw consume (records/s)", round(kafka["ratio"], 2))
    else:
        result.note("Kafka path: skipped in this run (--kafka-records 0 or --backlog)")
    result.write(args.json)
    return result.record


if __name__ == "__main__":
    main()
