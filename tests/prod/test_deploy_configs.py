"""Every shipped deployment file is checked by the schema of the software that reads it.

- Dagster instance files (dagster.yaml for dev, deploy/dagster.prod.yaml): Dagster's own instance
  loading (`InstanceRef.from_dir`: schema, storage, concurrency rules), then each configured class
  (storage, run coordinator, run launcher, compute logs, ...) is imported and its config
  processed exactly as Dagster does right before it instantiates the class. Nothing is
  instantiated that would connect anywhere; `{env: ...}` values get dummies.
- deploy/helm/values.yaml: Dagster's chart is not on this machine, so the keys this deployment
  relies on are asserted here and must agree with deploy/dagster.prod.yaml.
- deploy/kafka.env.example: turned into a confluent-kafka consumer, which rejects unknown
  properties and bad values (pointed at a closed loopback port: nothing is contacted).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import ConcurrencyConfig
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

from analytics_assets.defs.cdc.assets import INGEST_POOL
from analytics_assets.settings import PROJECT_ROOT

INSTANCE_FILES = [PROJECT_ROOT / "dagster.yaml", PROJECT_ROOT / "deploy" / "dagster.prod.yaml"]
HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
KAFKA_ENV = PROJECT_ROOT / "deploy" / "kafka.env.example"
INGEST_TAG = "analytics/ingest"

# Packages a deployment installs but `make install` does not (see docs/production.md).
OPTIONAL_PACKAGES = {"dagster_k8s": "dagster-k8s"}


def _env_names(node) -> set[str]:
    """Every `{env: NAME}` in a Dagster YAML document."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_names(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_names(v) for v in node)) if node else set()
    return set()


def _dummy(name: str) -> str:
    return "5432" if name.endswith("_PORT") else f"dummy-{name.lower().replace('_', '-')}"


def _class_data(ref: InstanceRef) -> dict[str, ConfigurableClassData]:
    """Storage, run coordinator, run launcher, compute logs, ...: every configured class."""
    return {
        name: getattr(ref, name)
        for name in ref._fields
        if isinstance(getattr(ref, name), ConfigurableClassData)
    }


def load_instance_config(path: Path, monkeypatch, tmp_path) -> InstanceRef:
    """Dagster's own loading of an instance file, with every `{env: ...}` set to a dummy."""
    for name in _env_names(yaml.safe_load(path.read_text())):
        monkeypatch.setenv(name, _dummy(name))
    return InstanceRef.from_dir(
        str(tmp_path), config_dir=str(path.parent), config_filename=path.name
    )


def process_class_config(data: ConfigurableClassData):
    """What `ConfigurableClassData.rehydrate` does before it instantiates the class."""
    module = importlib.import_module(data.module_name)
    klass = getattr(module, data.class_name)
    result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    if not result.success:
        raise DagsterInvalidConfigError(
            f"{data.module_name}.{data.class_name}", result.errors, data.config_dict
        )
    return result.value


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: p.name)
def test_instance_config_passes_dagsters_validation(path, monkeypatch, tmp_path):
    ref = load_instance_config(path, monkeypatch, tmp_path)
    checked = set()
    for field, data in _class_data(ref).items():
        package = data.module_name.split(".")[0]
        if package in OPTIONAL_PACKAGES and importlib.util.find_spec(package) is None:
            continue  # test_k8s_run_launcher_config_is_valid checks it where it is installed
        process_class_config(data)
        checked.add(field)
    assert {"storage_data", "run_coordinator_data", "compute_logs_data"} <= checked


# (ingest runs in flight, pool default limit), per instance file: in dev the next ingest run
# starts its worker while the previous one runs dbt (their ingests take turns on the DuckDB file);
# in production one ingest run at a time
INGEST_LIMITS = {"dagster.yaml": (2, 2), "dagster.prod.yaml": (1, 1)}


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: p.name)
def test_ingest_runs_and_their_pool_are_limited(path, monkeypatch, tmp_path):
    ref = load_instance_config(path, monkeypatch, tmp_path)
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    coordinator = ref.run_coordinator_data.rehydrate()  # local object, connects to nothing
    config = ConcurrencyConfig.from_concurrency_settings(
        ref.settings.get("concurrency", {}), coordinator.get_run_queue_config()
    )
    limits = config.run_queue_config.tag_concurrency_limits
    runs, pool = INGEST_LIMITS[path.name]
    assert {"key": INGEST_TAG, "limit": runs} in limits
    assert INGEST_POOL == "cdc_ingest"
    assert config.pool_config.default_pool_limit == pool  # cdc_ingest has no limit of its own


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: p.name)
def test_a_dead_run_worker_fails_its_run_and_gives_back_its_pool_slot(path, monkeypatch, tmp_path):
    """Run monitoring on, with a launcher that can check its run workers, not resuming (the run
    fails and is started again), and freeing the pool slots a dead worker never gives back:
    without that, one killed ingest run kept `cdc_ingest` blocked for good."""
    ref = load_instance_config(path, monkeypatch, tmp_path)
    monitoring = ref.settings["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] == 0
    assert monitoring["free_slots_after_run_end_seconds"] > 0
    launcher = ref.run_launcher_data
    klass = getattr(importlib.import_module(launcher.module_name), launcher.class_name)
    assert klass.supports_check_run_worker_health.fget(None)  # a property, on the class


def test_prod_instance_uses_postgres_k8s_and_gcs(monkeypatch, tmp_path):
    ref = load_instance_config(INSTANCE_FILES[1], monkeypatch, tmp_path)
    assert ref.storage_data.class_name == "DagsterPostgresStorage"
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == (
        "dagster_k8s",
        "K8sRunLauncher",
    )
    assert ref.compute_logs_data.class_name == "GCSComputeLogManager"
    assert ref.settings["run_monitoring"]["enabled"] is True


def test_a_misspelled_key_in_an_instance_file_is_caught(monkeypatch, tmp_path):
    source = (INSTANCE_FILES[1]).read_text()
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    for good, bad in [
        ("      db_name:", "      db_nam:"),  # storage (Postgres schema)
        ("    prefix: dagster-compute-logs", "    prefixx: dagster-compute-logs"),  # GCS logs
        ("    max_concurrent_runs: 10", "    max_concurent_runs: 10"),  # instance schema
    ]:
        assert good in source
        (broken_dir / "dagster.yaml").write_text(source.replace(good, bad, 1))
        with pytest.raises(DagsterInvalidConfigError):
            ref = load_instance_config(broken_dir / "dagster.yaml", monkeypatch, tmp_path)
            for data in _class_data(ref).values():
                if importlib.util.find_spec(data.module_name.split(".")[0]) is not None:
                    process_class_config(data)


def test_k8s_run_launcher_config_is_valid(monkeypatch, tmp_path):
    pytest.importorskip(
        "dagster_k8s", reason="dagster-k8s is not installed: add it to the dev extras"
    )
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict

    ref = load_instance_config(INSTANCE_FILES[1], monkeypatch, tmp_path)
    config = process_class_config(ref.run_launcher_data)
    assert config["instance_config_map"] == _dummy("DAGSTER_K8S_INSTANCE_CONFIG_MAP")
    # Volumes and resources are free-form in Dagster's schema: check them as Kubernetes models.
    for volume in config["volumes"]:
        k8s_model_from_dict(kubernetes.client.V1Volume, volume)
    for mount in config["volume_mounts"]:
        k8s_model_from_dict(kubernetes.client.V1VolumeMount, mount)
    k8s_model_from_dict(
        kubernetes.client.V1ResourceRequirements,
        config["run_k8s_config"]["container_config"]["resources"],
    )


# ---------------------------------------------------------------------------------------------
# Helm values


@pytest.fixture(scope="module")
def helm() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


@pytest.fixture(scope="module")
def prod_instance() -> dict:
    return yaml.safe_load(INSTANCE_FILES[1].read_text())


def _code_location(helm: dict) -> dict:
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    return deployment


def test_helm_storage_is_an_external_postgres_with_the_password_from_a_secret(helm):
    assert helm["postgresql"]["enabled"] is False
    assert helm["postgresql"]["postgresqlHost"]
    assert helm["generatePostgresqlPasswordSecret"] is False
    # The chart reads key `postgresql-password` of this Secret into DAGSTER_PG_PASSWORD.
    assert helm["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in helm["postgresql"]


def test_helm_code_location_loads_this_project_with_prod_settings(helm):
    location = _code_location(helm)
    assert location["codeServerArgs"] == ["--module-name", "analytics_assets.definitions"]
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert 'module_name = "analytics_assets.definitions"' in pyproject
    assert location["image"]["repository"] and location["image"]["tag"]
    assert location["includeConfigInLaunchedRuns"]["enabled"] is True
    env = {item["name"]: item for item in location["env"]}
    assert env["ANALYTICS_ENV"]["value"] == "prod"
    for name in ("GCP_PROJECT", "BIGQUERY_DATASET", "BIGQUERY_LOCATION"):
        assert env[name]["value"], name


def test_helm_secrets_come_from_kubernetes_secrets_never_from_values(helm):
    location = _code_location(helm)
    env = {item["name"]: item for item in location["env"]}
    for name in ("SOURCE_DATABASE_URL", "SLACK_WEBHOOK_URL", "KAFKA_SASL_PASSWORD"):
        assert "value" not in env[name], name
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] and ref["key"] == name
    # GCP credentials: a key file mounted from a Secret where GOOGLE_APPLICATION_CREDENTIALS says.
    key_file = Path(env["GOOGLE_APPLICATION_CREDENTIALS"]["value"])
    mounts = {m["name"]: m for m in location["volumeMounts"]}
    volumes = {v["name"]: v for v in location["volumes"]}
    (mount,) = [m for m in mounts.values() if key_file.parent == Path(m["mountPath"])]
    assert volumes[mount["name"]]["secret"]["secretName"]
    assert {"name": "analytics-kafka"} in location["envConfigMaps"]


def test_helm_runs_on_k8s_with_a_read_only_webserver(helm):
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    assert helm["dagsterWebserver"]["enableReadOnly"] is True
    assert helm["dagsterDaemon"]["enabled"] is True
    coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    # The chart refuses limits in both places.
    assert not coordinator["config"]["queuedRunCoordinator"]


def test_helm_values_agree_with_the_prod_instance_file(helm, prod_instance):
    runs, pools = helm["concurrency"]["runs"], helm["concurrency"]["pools"]
    assert helm["concurrency"]["enabled"] is True
    expected_runs = prod_instance["concurrency"]["runs"]
    assert runs["maxConcurrentRuns"] == expected_runs["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == expected_runs["tag_concurrency_limits"]
    assert {"key": INGEST_TAG, "limit": 1} in runs["tagConcurrencyLimits"]
    assert pools["defaultLimit"] == prod_instance["concurrency"]["pools"]["default_limit"] == 1
    assert pools["granularity"] == prod_instance["concurrency"]["pools"]["granularity"]

    daemon = helm["dagsterDaemon"]
    retries = prod_instance["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    monitoring = prod_instance["run_monitoring"]
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "cancelTimeoutSeconds": monitoring["cancel_timeout_seconds"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
        "maxResumeRunAttempts": monitoring["max_resume_run_attempts"],
        "freeSlotsAfterRunEndSeconds": monitoring["free_slots_after_run_end_seconds"],
    }
    assert daemon["sensors"] == {
        "useThreads": prod_instance["sensors"]["use_threads"],
        "numWorkers": prod_instance["sensors"]["num_workers"],
    }
    logs = helm["computeLogManager"]
    assert logs["type"] == prod_instance["compute_logs"]["class"]
    assert (
        logs["config"]["gcsComputeLogManager"]["prefix"]
        == (prod_instance["compute_logs"]["config"]["prefix"])
    )
    retention = prod_instance["retention"]
    assert helm["retention"]["sensor"]["purgeAfterDays"] == retention["sensor"]["purge_after_days"]
    assert (
        helm["retention"]["schedule"]["purgeAfterDays"]
        == (retention["schedule"]["purge_after_days"])
    )
    assert helm["telemetry"]["enabled"] is prod_instance["telemetry"]["enabled"] is False


def _snake(node):
    """Kubernetes YAML (camelCase) to the Python client's attribute names."""
    if isinstance(node, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): _snake(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_snake(v) for v in node]
    return node


def test_helm_kubernetes_objects_are_valid_kubernetes(helm):
    pytest.importorskip(
        "dagster_k8s", reason="dagster-k8s is not installed: add it to the dev extras"
    )
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict

    client = kubernetes.client
    location = _code_location(helm)
    for item in location["env"]:
        k8s_model_from_dict(client.V1EnvVar, _snake(item))
    for volume in location["volumes"]:
        k8s_model_from_dict(client.V1Volume, _snake(volume))
    for mount in location["volumeMounts"]:
        k8s_model_from_dict(client.V1VolumeMount, _snake(mount))
    resources = helm["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    k8s_model_from_dict(client.V1ResourceRequirements, resources["containerConfig"]["resources"])


# ---------------------------------------------------------------------------------------------
# Kafka consumer settings


def kafka_settings(path: Path) -> dict[str, str]:
    """`NAME=value` lines; comments and blanks skipped (the format of `--from-env-file`)."""
    settings = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name] = value
    return settings


def consumer_config(settings: dict[str, str]) -> dict[str, str]:
    """The documented convention: KAFKA_GROUP_ID -> group.id, and so on."""
    return {
        name.removeprefix("KAFKA_").lower().replace("_", "."): value
        for name, value in settings.items()
        if name.startswith("KAFKA_")
    }


def test_kafka_example_has_the_settings_exactly_once_delivery_needs():
    config = consumer_config(kafka_settings(KAFKA_ENV))
    assert config["enable.auto.commit"] == "false"
    assert config["enable.auto.offset.store"] == "false"
    assert config["isolation.level"] == "read_committed"
    assert config["auto.offset.reset"] == "earliest"
    assert config["bootstrap.servers"] and config["group.id"]
    assert config["security.protocol"] == "SASL_SSL"
    assert "sasl.password" not in config, "the password belongs in a Secret"
    settings = kafka_settings(KAFKA_ENV)
    assert settings["CDC_FEED"] == "kafka" and settings["CDC_TOPIC_PREFIX"]


def test_kafka_example_is_accepted_by_confluent_kafka():
    confluent_kafka = pytest.importorskip("confluent_kafka")
    config = consumer_config(kafka_settings(KAFKA_ENV))
    # A closed loopback port and a dummy password: librdkafka validates every property name and
    # value when the consumer is created, and nothing outside this machine is contacted.
    config.update({"bootstrap.servers": "127.0.0.1:9", "sasl.password": "dummy"})
    consumer = confluent_kafka.Consumer(config)
    consumer.close()
    with pytest.raises(confluent_kafka.KafkaException, match="isolation.levl"):
        confluent_kafka.Consumer({**config, "isolation.levl": "read_committed"})
