"""CDC vs batch extract: keeping an N-row orders table in sync when 1% of its rows change.

A scratch database on its own embedded server gets an `orders` table of N rows (default 5M;
`--quick` 500k) that the project snapshots into DuckDB (not timed). Then 1% of the rows are
updated at the source and both ways of bringing the warehouse up to date are timed in this run:

  CDC:          `analytics_assets.lib.cdc.ingest` of the changes (decode, merge, change log, commit,
                acknowledge)
  full extract: `COPY orders TO STDOUT (FORMAT csv)` into a file and a `create or replace table`
                from it in DuckDB (the batch-ELT alternative: re-extract and reload everything)

Prints both times and the ratio full extract / CDC (how many times cheaper CDC is).

    python bench/cdc_vs_extract.py [--rows 5000000] [--changed 0.01] [--json out.json]
"""

from __future__ import annotations

import time

from _common import Result, arg_parser, scratch_stack


def main(argv: list[str] | None = None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of rows updated")
    args = parser.parse_args(argv)
    rows = 500_000 if args.quick else args.rows
    every = max(1, round(1 / args.changed))
    result = Result("cdc_vs_extract", f"CDC vs full re-extract ({rows:,}-row orders, 1% changed)")

    with scratch_stack("cdc_extract_bench_", ("bench",)) as scratch:
        import duckdb
        import psycopg2

        from analytics_assets.dev.schema import migrate
        from analytics_assets.lib.cdc import ingest
        from analytics_assets.lib.feeds.slot import SlotFeed
        from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse

        url = scratch["urls"]["bench"]
        conn = psycopg2.connect(url)
        migrate(conn)
        cur = conn.cursor()
        t0 = time.perf_counter()
        cur.execute(
            "insert into orders (id, user_id, total, status, created_at, updated_at) "
            "select g, g %% 50000, (g %% 100000) / 100.0, 'new', "
            "timestamptz '2026-01-01' + (g %% 86400) * interval '1 minute', now() "
            "from generate_series(1, %s) g",
            (rows,),
        )
        conn.commit()
        load_s = time.perf_counter() - t0

        def make():
            feed = SlotFeed(url, slot="bench_slot", publication="bench_pub", tables=["orders"])
            wh = DuckDBWarehouse(scratch["dir"] / "cdc.duckdb")
            return feed, wh

        feed, wh = make()
        t0 = time.perf_counter()
        snap = ingest(feed=feed, warehouse=wh, batch_size=1_000_000, measure_lag=False)
        snapshot_s = time.perf_counter() - t0
        wh.close()

        cur.execute(
            "update orders set status = 'paid', paid_at = now(), updated_at = now() "
            "where id %% %s = 0",
            (every,),
        )
        changed = cur.rowcount
        conn.commit()

        feed, wh = make()
        t0 = time.perf_counter()
        res = ingest(feed=feed, warehouse=wh, measure_lag=False)
        cdc_s = time.perf_counter() - t0
        paid = wh.con.execute("select count(*) from raw.orders where status = 'paid'").fetchone()
        wh.close()

        csv_path = scratch["dir"] / "orders.csv"
        full = duckdb.connect(str(scratch["dir"] / "extract.duckdb"))
        t0 = time.perf_counter()
        with open(csv_path, "wb") as fh:
            cur.copy_expert("copy orders to stdout with (format csv, header)", fh)
        full.execute(
            "create or replace table orders as select * from read_csv(?, header = true)",
            [str(csv_path)],
        )
        full_s = time.perf_counter() - t0
        extracted = full.execute("select count(*) from orders").fetchone()[0]
        full.close()
        conn.close()

    result.figure("rows", rows)
    result.figure("rows changed", changed)
    result.figure("source load s", round(load_s, 2))
    result.figure("initial snapshot s (not compared)", round(snapshot_s, 2))
    result.figure("snapshot rows", snap.changes)
    result.figure("CDC apply s", round(cdc_s, 3))
    result.figure("CDC changes applied", res.changes)
    result.figure("full re-extract + load s", round(full_s, 3))
    result.figure("rows re-extracted", extracted)
    result.ratio("full re-extract / CDC (x times cheaper)", full_s / cdc_s, None, "higher")
    if paid[0] != changed or res.changes != changed:
        result.note(f"WARNING: CDC applied {res.changes:,}, raw has {paid[0]:,} paid rows")
    result.write(args.json)
    return result.record


if __name__ == "__main__":
    main()
