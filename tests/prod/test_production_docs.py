"""docs/production.md lists every setting the project reads, so the page cannot fall behind.

Scanned: environment variables read by the Python package (`os.environ.get("X")`, `_env("X")`,
`dg.EnvVar("X")`, `X_ENV = "X"` constants, ...), `env_var('X')` in the dbt project, `{env: X}` in
the instance files, the env of the Helm code location and the Kafka example.
"""

from __future__ import annotations

import re

import yaml

from analytics_assets.settings import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "production.md"
NAME = r"([A-Z][A-Z0-9]*_[A-Z0-9_]+)"
PYTHON_PATTERNS = [
    re.compile(r"(?:environ\.get|getenv|_env|EnvVar|setdefault)\(\s*[\"']" + NAME + r"[\"']"),
    re.compile(r"environ\[\s*[\"']" + NAME + r"[\"']\s*\]"),
    re.compile(r"^\s*[A-Z0-9_]*_ENV\s*=\s*[\"']" + NAME + r"[\"']", re.MULTILINE),
]
DBT_PATTERN = re.compile(r"env_var\(\s*[\"']" + NAME + r"[\"']")
ENV_FILE_LINE = re.compile(r"^#?\s*" + NAME + r"=", re.MULTILINE)


def _instance_env(node) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return {name for value in node.values() for name in _instance_env(value)}
    if isinstance(node, list):
        return {name for value in node for name in _instance_env(value)}
    return set()


def settings_read_by_the_project() -> dict[str, str]:
    """variable -> the file that reads it."""
    found: dict[str, str] = {}
    for path in sorted((PROJECT_ROOT / "analytics_assets").rglob("*.py")):
        text = path.read_text()
        for pattern in PYTHON_PATTERNS:
            for name in pattern.findall(text):
                found.setdefault(name, str(path.relative_to(PROJECT_ROOT)))
    dbt = PROJECT_ROOT / "dbt"
    for path in sorted(
        p
        for p in dbt.rglob("*")
        if p.suffix in {".yml", ".yaml", ".sql"}
        and not {"target", "dbt_packages", "logs"} & set(p.relative_to(dbt).parts)
    ):
        for name in DBT_PATTERN.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(PROJECT_ROOT)))
    for path in (PROJECT_ROOT / "dagster.yaml", PROJECT_ROOT / "deploy" / "dagster.prod.yaml"):
        for name in _instance_env(yaml.safe_load(path.read_text())):
            found.setdefault(name, str(path.relative_to(PROJECT_ROOT)))
    helm = yaml.safe_load((PROJECT_ROOT / "deploy" / "helm" / "values.yaml").read_text())
    for deployment in helm["dagster-user-deployments"]["deployments"]:
        for item in deployment.get("env", []):
            found.setdefault(item["name"], "deploy/helm/values.yaml")
    kafka = (PROJECT_ROOT / "deploy" / "kafka.env.example").read_text()
    for name in ENV_FILE_LINE.findall(kafka):
        found.setdefault(name, "deploy/kafka.env.example")
    return found


def test_the_scan_finds_the_settings_it_must():
    found = settings_read_by_the_project()
    # One from each kind of source: if one is missing, the scan itself broke.
    for name in (
        "ANALYTICS_ENV",  # settings.py through _env()
        "DBT_TARGET_PATH",  # os.environ.get
        "SLACK_WEBHOOK_URL",  # an X_ENV constant for dg.EnvVar
        "GCP_PROJECT",  # dbt profiles.yml
        "RAW_SCHEMA",  # dbt sources YAML
        "DAGSTER_PG_PASSWORD",  # instance files
        "DAGSTER_COMPUTE_LOG_BUCKET",  # deploy/dagster.prod.yaml
        "KAFKA_GROUP_ID",  # the Kafka example
        "KAFKA_SASL_PASSWORD",  # Helm env from a Secret
    ):
        assert name in found, name


def test_production_doc_lists_every_setting():
    documented = set(re.findall(r"`" + NAME + r"`", DOC.read_text()))
    missing = {
        name: where
        for name, where in settings_read_by_the_project().items()
        if name not in documented
    }
    assert missing == {}, "add these to docs/production.md (variable, default, meaning)"
