"""`analytics-assets`: the embedded stack, traffic, CDC, materialize, checks and the demo.

Every error a user can cause ends in one line that says what is wrong and what to do, exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys

from analytics_assets.lib.errors import ConfigError
from analytics_assets.settings import get_settings

EXIT_USER_ERROR = 2


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return number


def cmd_stack(args: argparse.Namespace) -> int:
    from analytics_assets.dev import stack

    if args.action == "up":
        info = stack.up()
        applied = stack.ready(info)
        if applied:
            print(f"[stack] source schema migrations applied: {applied}")
        print(f"[stack] up: PostgreSQL 18 on 127.0.0.1:{info.port}, data in {info.pgdata.parent}")
        print('[stack] next: eval "$(analytics-assets stack env)"')
    elif args.action == "down":
        print("[stack] stopped" if stack.down() else "[stack] was not running")
    elif args.action == "status":
        info = stack.status()
        if info is None:
            print("[stack] not running (start it with `analytics-assets stack up`)")
            return 1
        print(f"[stack] running on 127.0.0.1:{info.port}, data in {info.pgdata.parent}")
    elif args.action == "env":
        info = stack.status()
        if info is None:
            raise ConfigError("The stack is not running: run `analytics-assets stack up` first.")
        for key, value in info.env().items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from analytics_assets.dev import traffic
    from analytics_assets.lib.pg import connect

    conn = connect()
    try:
        if args.mode == "history":
            end = dt.datetime.combine(args.end, dt.time(), tzinfo=dt.UTC) if args.end else None
            with tqdm(total=args.days, unit="day", desc="history", disable=args.quiet) as bar:
                result = traffic.generate_history(
                    conn,
                    days=args.days,
                    orders_per_day=args.orders_per_day,
                    seed=args.seed,
                    end=end,
                    progress=bar.update,
                )
            print(
                f"[traffic] wrote {result.users} users, {result.products} products, "
                f"{result.orders} orders, {result.order_items} items "
                f"({result.start:%Y-%m-%d} .. {result.end:%Y-%m-%d})"
            )
        else:
            total = int(args.rate * args.seconds)
            with tqdm(total=total, unit="chg", desc="live", disable=args.quiet) as bar:
                result = traffic.run_live(
                    conn,
                    rate=args.rate,
                    seconds=args.seconds,
                    seed=args.seed,
                    progress=bar.update,
                )
            print(
                f"[traffic] {result.changes} changes in {result.transactions} transactions "
                f"over {result.seconds:.1f}s"
            )
    finally:
        conn.close()
    return 0


def cmd_cdc(args: argparse.Namespace) -> int:
    from analytics_assets.lib import cdc
    from analytics_assets.lib.read_copy import publish_read_copy

    settings = get_settings()
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    unknown = sorted(set(tables or ()) - set(settings.source.tables))
    if unknown:  # before connecting to the source, the progress bar and the warehouse lock
        raise ConfigError(
            f"--tables: {', '.join(unknown)} not captured; captured: "
            f"{', '.join(settings.source.tables)} (CAPTURED_TABLES)"
        )
    feed = cdc.make_feed(settings)
    try:
        if args.action == "status":
            status = feed.slot_status()
            lag = feed.lag(None)
            print(f"[cdc] feed {feed.kind}: " + ", ".join(f"{k}={v}" for k, v in status.items()))
            for table, item in sorted(lag.items()):
                # a sampled count read only the first CDC_LAG_MAX_BYTES of WAL: a lower bound
                pending = "?" if item.pending_changes is None else str(item.pending_changes)
                pending = (">=" if item.pending_sampled else "") + pending
                behind = f"{item.seconds_behind:.1f}s" if item.seconds_known else "?"
                print(
                    f"[cdc] {table:<14} pending {pending:>8}  "
                    f"behind {behind:>9}  wal {item.position_lag_bytes or 0:>10} B"
                )
            sent = getattr(feed, "statements", None)
            if sent is not None:
                print(f"[cdc] {sent} statements sent to the source")
            return 0
        warehouse = cdc.make_warehouse(settings)
        try:
            from tqdm import tqdm

            with tqdm(unit="chg", desc="ingest", disable=args.quiet) as bar:
                result = cdc.ingest(
                    tables,
                    feed=feed,
                    warehouse=warehouse,
                    progress=lambda p: bar.update(p["changes"]),
                )
            # readers open the read copy: publish it as the lag-driven runs do
            publish_read_copy(settings, getattr(warehouse, "con", None))
        finally:
            warehouse.close()
        snap = ", ".join(result.snapshot_tables) or "none"
        print(
            f"[cdc] {result.changes} changes applied in {result.batches} batches "
            f"({result.seconds:.1f}s); snapshot: {snap}"
        )
        return 0
    finally:
        feed.close()


def cmd_materialize(args: argparse.Namespace) -> int:
    from analytics_assets.materialize import materialize

    return materialize(args.select, args.partition, args.partition_range, verbose=args.verbose)


def cmd_check(args: argparse.Namespace) -> int:
    from analytics_assets import check

    if args.action == "list":
        return check.list_checks()
    if not args.checks:
        raise ConfigError("check run: name at least one check (see `analytics-assets check list`)")
    return check.run_checks(args.checks, args.partition)


def cmd_demo(args: argparse.Namespace) -> int:
    from analytics_assets.dev.demo import run_demo

    return run_demo(days=args.days, partitions=args.partitions, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytics-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="the embedded PostgreSQL stack")
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("traffic", help="write realistic traffic into the source app DB")
    tsub = p.add_subparsers(dest="mode", required=True)
    h = tsub.add_parser("history", help="N days of past orders")
    h.add_argument("--days", type=_positive_int, default=30)
    h.add_argument("--orders-per-day", type=_positive_int, default=200)
    h.add_argument("--end", type=_date, default=None, help="last day (YYYY-MM-DD), default now")
    h.add_argument("--seed", type=int, default=42)
    h.add_argument("--quiet", action="store_true")
    live = tsub.add_parser("live", help="a live stream of changes")
    live.add_argument("--rate", type=_positive_float, default=50.0, help="changes per second")
    live.add_argument("--seconds", type=_positive_float, default=60.0)
    live.add_argument("--seed", type=int, default=7)
    live.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_traffic)

    p = sub.add_parser("cdc", help="change data capture: lag and slot status, ingest now")
    p.add_argument("action", choices=["status", "ingest"])
    p.add_argument("--tables", default=None, help="comma-separated subset (ingest)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_cdc)

    p = sub.add_parser(
        "materialize", help="`dagster asset materialize` with the arguments checked first"
    )
    p.add_argument("--select", required=True, help="Dagster asset selection, e.g. 'tag:daily'")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--partition", default=None, help="one day, YYYY-MM-DD")
    window.add_argument("--partition-range", default=None, help="START...END, inclusive")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print Dagster's event log and dbt's output here instead of a line per step",
    )
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("check", help="run asset checks alone, without materializing their assets")
    p.add_argument("action", choices=["list", "run"])
    p.add_argument("checks", nargs="*", help="run: asset/key:check_name, or a check name")
    p.add_argument("--partition", default=None, help="the daily partition, for per-date checks")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="the main job: stack, history, whole graph for recent days")
    p.add_argument("--days", type=_positive_int, default=30, help="days of history to load")
    p.add_argument("--partitions", type=_positive_int, default=7, help="daily partitions to build")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_settings()
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # the reader went away (`... | head`): stop quietly, and let the exit's flush of stdout
        # go nowhere instead of raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence for user-facing errors
        from analytics_assets.dev.stack import StackError
        from analytics_assets.lib.errors import FeedError, IngestBusy

        # another ingest holds the slot or the warehouse, the source is down or unreachable
        if isinstance(exc, StackError | IngestBusy | FeedError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
