"""docs/production.md lists every setting the project reads, and nothing else, so the page
cannot fall behind the code nor promise a setting that does not exist.

The package reads the environment in one place, `analytics_assets/settings.py`, which declares
every variable it reads in `VARIABLES` (name, group, default). Checked here: no other module of
the package reads the environment; the docs' tables name exactly `VARIABLES` plus what the dbt
project (`env_var('X')`), the instance files (`{env: X}`), the Helm code location and the Kafka
example read; each documented default is the declared one; dbt's defaults agree with settings'.
"""

from __future__ import annotations

import re

import yaml

from analytics_assets.settings import PROJECT_ROOT, VARIABLES

DOC = PROJECT_ROOT / "docs" / "production.md"
NAME = r"([A-Z][A-Z0-9]*_[A-Z0-9_]+)"
# Reading the environment anywhere but settings.py: os.environ.get / [..] / getenv, or a
# dg.EnvVar spelled with a literal name (settings.py names the variable).
ENV_READ = re.compile(
    r"environ\.get\(|environ\[|getenv\(|EnvVar\(\s*[\"']|os\.environ\b(?!\.update|\.pop|\.clear)"
)
# Modules that hand the whole environment to a process they start for the command that ran them
# (no setting is read): the warm dbt command passes it to the dbt it runs.
PASSES_THE_ENVIRONMENT = {"analytics_assets/lib/dbt_warm.py": ["os.environ"]}
DBT_PATTERN = re.compile(r"env_var\(\s*[\"']" + NAME + r"[\"'](?:\s*,\s*[\"']([^\"']*)[\"'])?")
ENV_FILE_LINE = re.compile(r"^#?\s*" + NAME + r"=", re.MULTILINE)
TABLE_ROW = re.compile(r"^\|\s*(`[^|]*?)\s*\|\s*([^|]*?)\s*\|", re.MULTILINE)


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
    found = dict.fromkeys(VARIABLES, "analytics_assets/settings.py")
    dbt = PROJECT_ROOT / "dbt"
    for path in sorted(
        p
        for p in dbt.rglob("*")
        if p.suffix in {".yml", ".yaml", ".sql"}
        and not {"target", "dbt_packages", "logs"} & set(p.relative_to(dbt).parts)
    ):
        for name, _ in DBT_PATTERN.findall(path.read_text()):
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


def documented(path) -> dict[str, str]:
    """Every variable in the first column of a table of `path` -> its row's second cell."""
    rows: dict[str, str] = {}
    for first, second in TABLE_ROW.findall(path.read_text()):
        for name in re.findall(r"`" + NAME + r"`", first):
            rows.setdefault(name, second)
    return rows


def test_only_settings_reads_the_environment():
    readers = {
        str(path.relative_to(PROJECT_ROOT)): ENV_READ.findall(path.read_text())
        for path in sorted((PROJECT_ROOT / "analytics_assets").rglob("*.py"))
        if path.name != "settings.py"
    }
    found = {path: found for path, found in readers.items() if found}
    assert found == PASSES_THE_ENVIRONMENT


def test_the_scan_finds_the_settings_it_must():
    found = settings_read_by_the_project()
    # One from each kind of source: if one is missing, the scan itself broke.
    for name in (
        "ANALYTICS_ENV",  # settings.VARIABLES
        "QUALITY_VOLUME_BAND",  # a settings group of its own
        "GOOGLE_APPLICATION_CREDENTIALS",  # dbt profiles.yml only
        "RAW_SCHEMA",  # dbt sources YAML
        "DAGSTER_PG_PASSWORD",  # instance files
        "DAGSTER_COMPUTE_LOG_BUCKET",  # deploy/dagster.prod.yaml
        "KAFKA_GROUP_ID",  # the Kafka example
        "KAFKA_SASL_PASSWORD",  # Helm env from a Secret
    ):
        assert name in found, name


def test_production_doc_lists_every_setting_and_nothing_else():
    read = settings_read_by_the_project()
    docs = documented(DOC)
    assert {n: w for n, w in read.items() if n not in docs} == {}, "add these to the doc"
    assert sorted(set(docs) - set(read)) == [], "documented, but nothing reads them"


def test_documented_defaults_are_the_declared_ones():
    docs = documented(DOC)
    wrong = {
        v.name: (docs[v.name], v.documented_default)
        for v in VARIABLES.values()
        if v.documented_default is not None
        and not docs[v.name].startswith(f"`{v.documented_default}`")
    }
    assert wrong == {}


def test_readme_and_quality_doc_name_only_settings_that_exist():
    read = settings_read_by_the_project()
    for path in (PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "quality.md"):
        assert sorted(set(documented(path)) - set(read)) == [], path.name


def test_dbt_defaults_agree_with_the_settings():
    """GCP_PROJECT, BIGQUERY_DATASET, ...: dbt and the Python side read the same default."""
    dbt_defaults = {
        name: default
        for path in (PROJECT_ROOT / "dbt").rglob("*.yml")
        if "target" not in path.relative_to(PROJECT_ROOT / "dbt").parts
        for name, default in DBT_PATTERN.findall(path.read_text())
    }
    shared = {n: d for n, d in dbt_defaults.items() if n in VARIABLES and VARIABLES[n].default}
    assert "GCP_PROJECT" in shared
    assert {n: VARIABLES[n].default for n in shared} == shared
