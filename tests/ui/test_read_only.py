"""The UI's exposure, as the README's production section describes it: Dagster's webserver binds
to 127.0.0.1 unless told otherwise, and `--read-only` serves the UI with every mutation refused.

Real webserver on the project's workspace and instance (embedded Postgres storage); no browser.
"""

from __future__ import annotations

import json
import time
import urllib.request

import psutil

from analytics_assets.settings import PROJECT_ROOT
from tests.ui.conftest import Service, free_port

LAUNCH = """
mutation {
  launchPipelineExecution(executionParams: {
    selector: {repositoryLocationName: "analytics_assets", repositoryName: "__repository__",
               pipelineName: "__ASSET_JOB"}
  }) { __typename ... on PythonError { message } ... on UnauthorizedError { message } }
}
"""


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def listening_addresses(pid: int) -> set[str]:
    """The IPs the webserver (or a child of it) listens on."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    found = set()
    for proc in procs:
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                found.add(conn.laddr.ip)
    return found


def test_read_only_webserver_on_loopback_refuses_mutations(dagster_home, artifacts_dir):
    port = free_port()
    # No -h: Dagster's default host is what an operator who forgets the flag gets.
    server = Service(
        "dagster-webserver",
        ["-w", str(PROJECT_ROOT / "workspace.yaml"), "-p", str(port), "--read-only"],
        artifacts_dir / "webserver-read-only.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_http(f"{url}/server_info")
        deadline = time.monotonic() + 30
        while (
            not (addresses := listening_addresses(server.proc.pid)) and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert addresses, "the webserver listens nowhere?"
        assert addresses <= {"127.0.0.1", "::1"}, f"the UI listens beyond loopback: {addresses}"

        permissions = {
            p["permission"]: p["value"]
            for p in graphql(url, "{ permissions { permission value } }")["data"]["permissions"]
        }
        for action in ("launch_pipeline_execution", "start_schedule", "edit_sensor"):
            assert permissions[action] is False, (action, permissions)

        answer = graphql(url, LAUNCH)["data"]["launchPipelineExecution"]
        assert answer["__typename"] == "UnauthorizedError", answer
    finally:
        server.stop()
