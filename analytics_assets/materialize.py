"""`analytics-assets materialize`: `dagster asset materialize` for this project, checked first.

Dagster's own command answers a mistyped date, an empty selection or a range over unpartitioned
assets with a Python traceback. This command checks what a user can get wrong before any run
starts, says in one line what is wrong and what to do (the definitions load once):

- the Dagster instance: DAGSTER_HOME set, or the embedded stack running (its env is taken over);
- `--partition` / `--partition-range`: ISO dates, start <= end, inside the daily partitions
  (from PARTITION_START_DATE up to the last day that has ended);
- `--select`: matches at least one asset; daily marts need a partition (and ranges need every
  selected asset to be a daily mart, as Dagster's single-run backfills do).

Then it runs the selection as one run on the instance (Dagster's `execute_job`, what its command
calls), with the output a person reads: a line per step and a summary; Dagster's event log and
dbt's output go to a log file under <data dir>/logs (`--verbose` prints them instead).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import warnings

from analytics_assets.lib.errors import ConfigError
from analytics_assets.settings import get_settings

DEFINITIONS_MODULE = "analytics_assets.definitions"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
INVOCATION_TAG = "analytics/cli_invocation"
# full logs of the last runs started from this command stay under <data dir>/logs
LOGS_KEPT = 20


def parse_day(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} is not a date: use YYYY-MM-DD, e.g. 2026-02-14"
        ) from None


def partition_window(
    partition: str | None, partition_range: str | None, *, today: dt.date | None = None
) -> tuple[dt.date, dt.date] | None:
    """The first and last partition day asked for, checked against the daily partitions."""
    if partition is None and partition_range is None:
        return None
    if partition is not None and partition_range is not None:
        raise ConfigError("give --partition or --partition-range, not both")
    if partition is not None:
        first = last = parse_day(partition, "--partition")
    else:
        parts = partition_range.split("...")
        if len(parts) != 2:
            raise ConfigError(
                f"--partition-range {partition_range!r} is not START...END "
                "(three dots), e.g. 2026-02-01...2026-02-28"
            )
        first = parse_day(parts[0], "--partition-range start")
        last = parse_day(parts[1], "--partition-range end")
        if last < first:
            raise ConfigError(
                f"--partition-range ends ({last}) before it starts ({first}): "
                f"did you mean {last}...{first}?"
            )
    settings = get_settings()
    start = dt.date.fromisoformat(settings.partitions.start)
    newest = _last_closed_day(settings.partitions.timezone, today)
    for day in sorted({first, last}):
        if day < start:
            raise ConfigError(
                f"{day} is before the first daily partition ({start}); "
                "PARTITION_START_DATE sets where partitions begin"
            )
        if day > newest:
            raise ConfigError(
                f"{day} has no daily partition yet: the newest is {newest} "
                f"(a day's partition exists once the day has ended in {settings.partitions.timezone})"
            )
    return first, last


def _last_closed_day(timezone: str, today: dt.date | None) -> dt.date:
    if today is None:
        from analytics_assets.lib.partitions import last_ended_day

        return last_ended_day(timezone=timezone)
    return today - dt.timedelta(days=1)


def ensure_instance_env() -> None:
    """Point Dagster at the dev stack's instance when the shell has not (`stack env`)."""
    if get_settings().dagster_home:
        return
    if get_settings().is_prod:
        raise ConfigError("DAGSTER_HOME is not set: point it at the instance's dagster.yaml")
    from analytics_assets.dev import stack

    info = stack.status()
    if info is None:
        raise ConfigError("The stack is not running: run `analytics-assets stack up` first.")
    os.environ.update(info.env())
    get_settings.cache_clear()


def check_selection(
    select: str, window: tuple[dt.date, dt.date] | None, *, is_range: bool = False
) -> list[str]:
    """Resolve `select` as Dagster's command does; return the selected asset keys (strings)."""
    import dagster as dg

    from analytics_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    try:
        with warnings.catch_warnings():  # Dagster's beta notes on its own selection parser
            warnings.simplefilter("ignore", dg.BetaWarning)
            keys = dg.AssetSelection.from_coercible(select.split(",")).resolve(graph)
    except Exception as exc:  # noqa: BLE001 - Dagster raises several types for a bad selection
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--select {select!r} is not a valid selection: {first_line}") from None
    keys = {k for k in keys if graph.get(k).is_materializable}
    if not keys:
        groups = sorted({graph.get(k).group_name for k in graph.materializable_asset_keys})
        raise ConfigError(
            f"--select {select!r} matches no asset; try 'group:<name>' with one of "
            f"{', '.join(groups)}, 'tag:daily' (the daily marts) or 'not tag:daily'"
        )
    partitioned = sorted(k.to_user_string() for k in keys if graph.get(k).partitions_def)
    plain = sorted(k.to_user_string() for k in keys if not graph.get(k).partitions_def)
    if window is None and partitioned:
        raise ConfigError(
            f"{len(partitioned)} selected asset(s) are daily-partitioned ({partitioned[0]}, ...): "
            "add --partition YYYY-MM-DD or --partition-range START...END"
        )
    if window is not None and not partitioned:
        raise ConfigError(
            "none of the selected assets is partitioned: drop --partition/--partition-range "
            "or select the daily marts with 'tag:daily'"
        )
    if is_range and plain:
        raise ConfigError(
            f"a partition range runs daily marts only, but the selection also has {plain[0]}"
            f"{' and others' if len(plain) > 1 else ''}: materialize those without a range first, "
            "then the range with --select 'tag:daily'"
        )
    return sorted(k.to_user_string() for k in keys)


def materialize(
    select: str,
    partition: str | None = None,
    partition_range: str | None = None,
    *,
    verbose: bool = False,
) -> int:
    window = partition_window(partition, partition_range)
    ensure_instance_env()
    keys = check_selection(select, window, is_range=partition_range is not None)
    print(
        f"[materialize] {len(keys)} asset(s)"
        + (f", days {window[0]}..{window[1]}" if window else "")
    )
    tags = {}
    if partition is not None:
        tags[PARTITION_TAG] = partition
    if partition_range is not None:
        tags[RANGE_START_TAG], tags[RANGE_END_TAG] = partition_range.split("...")
    return run_selection(keys, tags, verbose=verbose)


def run_selection(keys: list[str], tags: dict[str, str], *, verbose: bool = False) -> int:
    """Run the assets `keys` (user strings) as one run on the instance, as `dagster asset materialize` does. Quiet by
    default: Dagster's event log and dbt's output go to a log file, the terminal gets a line
    per step and a summary. `verbose`: everything on the terminal, as Dagster prints it."""
    import uuid

    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from analytics_assets.definitions import defs
    from analytics_assets.run_report import StepProgress, summary_lines, utc_stamp

    keys = [dg.AssetKey.from_user_string(k) for k in keys]
    job = defs.get_repository_def().get_implicit_job_def_for_assets(keys)
    invocation = uuid.uuid4().hex
    # the code location by module, as Dagster's command points at it: a step in another process
    # (the multiprocess executor in prod) loads the same job by name
    recon = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", os.getcwd()
    ).get_reconstructable_job(job.name)
    tags = {**tags, INVOCATION_TAG: invocation}

    def say(line: str) -> None:
        print(f"[materialize] {line}", flush=True)

    with dg.DagsterInstance.get() as instance:
        if verbose:
            result = dg.execute_job(recon, instance, tags=tags, asset_selection=keys)
            log_path = None
        else:
            log_path = _log_path(utc_stamp())
            say(f"running; full log: {log_path} (--verbose prints it here)")
            with _output_to(log_path) as terminal:

                def tell(line: str) -> None:  # from the progress thread only
                    terminal.write(f"[materialize] {line}\n")
                    terminal.flush()

                with StepProgress(instance, (INVOCATION_TAG, invocation), tell):
                    result = dg.execute_job(recon, instance, tags=tags, asset_selection=keys)
        for line in summary_lines(instance, result.run_id, log_path=log_path):
            say(line)
    return 0 if result.success else 1


def _log_path(stamp: str):
    from analytics_assets.lib.retention import keep_newest

    logs = get_settings().data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    keep_newest(logs.glob("materialize-*.log"), LOGS_KEPT - 1)
    return logs / f"materialize-{stamp}.log"


@contextlib.contextmanager
def _output_to(path):
    """File descriptors 1 and 2 (this process, dbt's subprocesses, Dagster's loggers and the
    warnings they print) go to `path`; yields the terminal, for the lines meant for a person."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            terminal.close()
