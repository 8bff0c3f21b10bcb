"""The dev instance's run launcher: Dagster's DefaultRunLauncher plus a run worker health check,
so the daemon's run monitoring marks a run failed when its process is gone.

Dagster's DefaultRunLauncher has no health check, so monitoring never looks at a STARTED run's
process. A run its code server launched is still marked failed when the worker dies (the code
server notices its child is gone), but a run started by `dagster asset materialize` executes in
the CLI process: killed, it stayed STARTED for good, kept its `cdc_ingest` pool slot and the run
queue's one place, and every later ingest waited behind it. Here the worker is the process whose
PID the run's first engine event carries ("Started process for run" / "Executing steps in
process"); it is healthy while a process with that PID exists, started no later than that event
(a PID reused by a newer process does not count) and is not a zombie.

PIDs are local to a machine: this is for instances whose run workers all run on the host of the
daemon, as on the embedded dev stack. Production uses the K8sRunLauncher, which checks the run's
Kubernetes Job instead.
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

# a process created this long after the event that names its PID is another process
PID_REUSE_SLACK_SECONDS = 1.0


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring can check (same host only)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        found = self._worker(run.run_id)
        if found is None:
            # the run has not recorded its worker yet (it is starting): nothing to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not recorded yet")
        pid, recorded_at = found
        if worker_alive(pid, recorded_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker PID {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process (PID {pid}) is gone: killed or crashed"
        )

    def _worker(self, run_id: str) -> tuple[int, float] | None:
        records = self._instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=50, ascending=True
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            data = event.engine_event_data if event is not None else None
            pid = data.metadata.get("pid") if data is not None else None
            if pid is not None and str(pid.value).isdigit():
                return int(pid.value), record.event_log_entry.timestamp
        return None


def worker_alive(pid: int, recorded_at: float) -> bool:
    """A process with this PID exists, is not a zombie and is the one that recorded it."""
    try:
        proc = psutil.Process(pid)
        return (
            proc.status() != psutil.STATUS_ZOMBIE
            and proc.create_time() <= recorded_at + PID_REUSE_SLACK_SECONDS
        )
    except psutil.NoSuchProcess:
        return False
