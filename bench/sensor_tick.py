"""Sensor tick: `cdc_lag_sensor` evaluated with 50 captured tables at 1k, 200k and 2M pending
changes in one run (targets: median tick at 2M <= 100 ms, tick(2M) / tick(1k) <= 2, and one source
round trip for the lag read).

A scratch database on its own embedded server gets 50 tables, a publication and a pgoutput slot;
CAPTURED_TABLES names all 50. Pending changes are added level by level (one transaction per table
per level) and the sensor is evaluated in-process against the project's Definitions and an
ephemeral Dagster instance at each level. Every statement the feed sends to the source is counted
by a cursor wrapper; the lag read must be one statement for all tables (the other is the session
setup of the fresh connection each tick opens).

    python bench/sensor_tick.py [--tables 50] [--ticks 30] [--pending 1000,200000,2000000]
"""

from __future__ import annotations

import logging
import os
import statistics
import time

from _common import Result, arg_parser, scratch_stack

TARGET_MS = 100.0
TARGET_GROWTH = 2.0


def main(argv: list[str] | None = None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--tables", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument(
        "--pending", default="1000,200000,2000000", help="pending changes at each level"
    )
    args = parser.parse_args(argv)
    ticks = 10 if args.quick else args.ticks
    levels = [int(x) for x in args.pending.split(",")]
    if args.quick and args.pending == parser.get_default("pending"):
        levels = [1000, 20000, 200000]
    result = Result("sensor_tick", f"Sensor tick ({args.tables} captured tables)")

    with scratch_stack("sensor_bench_", ("bench",)) as scratch:
        import psycopg2

        url = scratch["urls"]["bench"]
        tables = [f"t{i:02d}" for i in range(1, args.tables + 1)]
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        for t in tables:
            cur.execute(
                f"create table {t} (id bigint primary key, v text, created_at timestamptz "
                "default now())"
            )
        os.environ.update(
            SOURCE_DATABASE_URL=url,
            CAPTURED_TABLES=",".join(tables),
            WAREHOUSE_PATH=str(scratch["dir"] / "warehouse.duckdb"),
        )
        from analytics_assets import settings

        settings.get_settings.cache_clear()
        from analytics_assets.lib.cdc import make_feed

        feed = make_feed()
        feed.ensure_publication()
        feed.close()
        s = settings.get_settings()
        cur.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (s.cdc.slot,))

        import dagster as dg

        from analytics_assets.definitions import build_definitions
        from analytics_assets.defs.automation.sensors import cdc_lag_sensor
        from analytics_assets.lib import pg as pg_mod

        counts = {"statements": 0, "lag": 0, "connects": 0}

        class CountingCursor(psycopg2.extensions.cursor):
            def execute(self, query, vars=None):  # noqa: A002 - psycopg2's signature
                counts["statements"] += 1
                text = query if isinstance(query, str) else query.as_string(self.connection)
                if "pg_logical_slot_peek_binary_changes" in text or "unnest(" in text:
                    counts["lag"] += 1
                return super().execute(query, vars)

        real_connect = pg_mod.connect

        def counting_connect(url, **kwargs):
            counts["connects"] += 1
            return real_connect(url, cursor_factory=CountingCursor, **kwargs)

        pg_mod.connect = counting_connect
        defs = build_definitions()
        instance = dg.DagsterInstance.ephemeral()
        logging.getLogger("dagster").setLevel(logging.WARNING)
        logging.disable(logging.INFO)  # the sensor logs each (not launched) run request
        profiler = None
        if os.environ.get("BENCH_PROFILE"):  # pyinstrument over the measured ticks
            from pyinstrument import Profiler

            profiler = Profiler()
        medians: dict[int, float] = {}
        per_tick: list[dict] = []
        pending = 0
        try:
            for level in levels:
                per_table = (level - pending) // len(tables)
                for t in tables:  # pending changes in the slot, one transaction per table
                    first = pending // len(tables)
                    cur.execute(
                        f"insert into {t} (id, v) select g, 'x' || g "  # noqa: S608 - generated names
                        "from generate_series(%s, %s) g",
                        (first + 1, first + per_table),
                    )
                pending += per_table * len(tables)
                cur.execute(
                    "select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 "
                    "from pg_replication_slots where slot_name = %s",
                    (s.cdc.slot,),
                )
                wal = cur.fetchone()[0]
                times = []
                for i in range(ticks + 1):
                    before = dict(counts)
                    context = dg.build_sensor_context(instance=instance, definitions=defs)
                    if profiler is not None and i == 1 and level == levels[-1]:
                        profiler.start()
                    started = time.perf_counter()
                    cdc_lag_sensor(context)
                    elapsed = (time.perf_counter() - started) * 1000
                    if i == 0:
                        continue  # the first tick warms imports and caches
                    times.append(elapsed)
                    per_tick.append({k: counts[k] - before[k] for k in counts})
                medians[pending] = statistics.median(times)
                label = f"{pending:,} pending"
                result.figure(f"{label}: WAL behind MiB", round(wal / 2**20, 1))
                result.figure(f"{label}: median tick ms", round(medians[pending], 1))
                result.figure(
                    f"{label}: p90 tick ms", round(sorted(times)[int(0.9 * (len(times) - 1))], 1)
                )
        finally:
            pg_mod.connect = real_connect
            if profiler is not None:
                profiler.stop()
                print(profiler.output_text(show_all=False))
            conn.close()

    smallest, largest = min(medians), max(medians)
    result.figure("captured tables", args.tables)
    result.figure("ticks measured per level", ticks)
    result.figure("lag window (CDC_LAG_MAX_BYTES) bytes", s.cdc.lag_max_bytes)
    lag_reads = max(t["lag"] for t in per_tick)
    result.figure("lag-read statements per tick", lag_reads)
    result.figure("source statements per tick (all)", max(t["statements"] for t in per_tick))
    result.figure("source connections per tick", max(t["connects"] for t in per_tick))
    result.ratio(f"median tick at {largest:,} pending / 100 ms", medians[largest] / TARGET_MS, 1.0)
    result.ratio(
        f"tick({largest:,}) / tick({smallest:,})",
        medians[largest] / medians[smallest],
        TARGET_GROWTH,
    )
    result.ratio("lag-read round trips per tick / 1", lag_reads / 1, 1.0)
    result.note(
        "each tick opens a fresh source connection: one statement sets the session (time zone, "
        "date style), one reads the lag of every table, decoding at most the first "
        "CDC_LAG_MAX_BYTES of pending WAL"
    )
    result.write(args.json)
    return result.record


if __name__ == "__main__":
    main()
