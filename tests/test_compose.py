"""docker-compose.yml and the Dockerfile agree with leaderboard.settings (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from leaderboard import cli, demo, settings
from leaderboard.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = Settings()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = compose["services"]
    return svcs


def apps(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The project's own services (built from the Dockerfile)."""
    return {name: s for name, s in services(compose).items() if "build" in s}


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def test_project_services_exist(compose: dict[str, Any]) -> None:
    names = set(apps(compose))
    assert {"consumer-1", "consumer-2", "api", "simulator"} <= names
    assert {"kafka", "topic-init", "redis", "postgres", "prometheus", "grafana"} <= set(services(compose))
    assert services(compose)["simulator"]["profiles"] == ["simulator"]
    for name, svc in apps(compose).items():
        assert svc["command"][0] in cli.COMMANDS, f"{name}: unknown subcommand {svc['command'][0]}"


def test_every_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = set(settings.env_names().values())
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\bLEADERBOARD_[A-Z0-9_]+", text))
    assert used, "compose sets no LEADERBOARD_* variables"
    assert used <= known, f"not in leaderboard.settings: {sorted(used - known)}"
    for name, svc in apps(compose).items():
        values = env(svc)
        settings.load(values)  # every value is valid for the settings module too
        for var in ("LEADERBOARD_KAFKA_BOOTSTRAP", "LEADERBOARD_REDIS_URL", "LEADERBOARD_DATABASE_URL"):
            assert var in values, f"{name} misses {var}"


def test_topics_and_group_match_settings(compose: dict[str, Any]) -> None:
    expected = {
        "LEADERBOARD_TOPIC": DEFAULTS.topic,
        "LEADERBOARD_DLQ_TOPIC": DEFAULTS.dlq_topic,
        "LEADERBOARD_PERIOD_CLOSED_TOPIC": DEFAULTS.period_closed_topic,
        "LEADERBOARD_MODERATION_TOPIC": DEFAULTS.moderation_topic,
        "LEADERBOARD_CONSUMER_GROUP": DEFAULTS.consumer_group,
        "LEADERBOARD_REDIS_PREFIX": DEFAULTS.redis_prefix,
    }
    for name, svc in apps(compose).items():
        values = env(svc)
        for var, want in expected.items():
            assert values.get(var, want) == want, f"{name}: {var}={values.get(var)} but settings say {want}"
    init = services(compose)["topic-init"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    for topic, parts in (
        (DEFAULTS.topic, 12),
        (DEFAULTS.dlq_topic, 3),
        (DEFAULTS.period_closed_topic, 3),
        (DEFAULTS.moderation_topic, 3),
    ):
        assert f"{topic}:{parts}" in script, f"topic-init does not create {topic} with {parts} partitions"


def test_ports_match_settings(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    kafka_port = int(DEFAULTS.kafka_bootstrap.rsplit(":", 1)[1])
    redis_port = urlsplit(DEFAULTS.redis_url).port
    pg_port = urlsplit(DEFAULTS.database_url).port
    # Host ports are the settings' defaults: tools on the host work against compose unchanged.
    assert kafka_port in published(svcs["kafka"]).values()
    assert published(svcs["redis"]) == {6379: redis_port}
    assert published(svcs["postgres"]) == {5432: pg_port}
    assert published(svcs["api"]) == {DEFAULTS.api_port: DEFAULTS.api_port}
    assert env(svcs["api"])["LEADERBOARD_API_PORT"] == str(DEFAULTS.api_port)
    # Inside the network the services use the same ports as the URLs in their environment.
    app_env = env(svcs["api"])
    assert urlsplit(app_env["LEADERBOARD_REDIS_URL"]).port == redis_port
    assert urlsplit(app_env["LEADERBOARD_DATABASE_URL"]).port == pg_port
    kafka_env = env(svcs["kafka"])
    internal = app_env["LEADERBOARD_KAFKA_BOOTSTRAP"]
    assert f"INTERNAL://{internal}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://127.0.0.1:{kafka_port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    # Consumers: the settings' metrics port inside, the demo's ports on the host.
    consumers = [svcs["consumer-1"], svcs["consumer-2"]]
    for svc in consumers:
        assert env(svc)["LEADERBOARD_CONSUMER_METRICS_PORT"] == str(DEFAULTS.consumer_metrics_port)
        assert "--metrics-host" in svc["command"]
    host_ports = [published(svc)[DEFAULTS.consumer_metrics_port] for svc in consumers]
    assert tuple(host_ports) == demo.consumer_ports(DEFAULTS)


def test_prometheus_and_grafana_wiring(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    prom_conf = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-compose.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prom_conf["scrape_configs"]
    }
    assert targets["leaderboard-consumer"] == [
        f"consumer-{i}:{DEFAULTS.consumer_metrics_port}" for i in (1, 2)
    ]
    assert targets["leaderboard-api"] == [f"api:{DEFAULTS.api_port}"]
    local = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    local_targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in local["scrape_configs"]
    }
    assert local_targets["leaderboard-consumer"] == [f"127.0.0.1:{p}" for p in demo.consumer_ports(DEFAULTS)]
    assert local_targets["leaderboard-api"] == [f"127.0.0.1:{DEFAULTS.api_port}"]
    assert local["global"]["scrape_interval"] == "5s"

    prom = svcs["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus-compose.yml" in prom["command"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert 9090 in published(prom)
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/leaderboard.yml").read_text())
    graf = svcs["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in graf["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in graf["volumes"]
    assert env(graf)["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env(graf)["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "pip install -c constraints.txt ." in text
    assert 'ENTRYPOINT ["leaderboard"]' in text
    for package in ("leaderboard", "consumers", "producers", "query_api", "schemas"):
        assert f"COPY {package} ./{package}" in text


def test_redis_frees_lazily_in_compose_and_the_local_stack(compose: dict[str, Any]) -> None:
    """An expiring closed period (or any big delete) must never block Redis: both configs free lazily."""
    wanted = {
        f"lazyfree-lazy-{k}": "yes" for k in ("expire", "eviction", "server-del", "user-del", "user-flush")
    }
    command = [str(a) for a in services(compose)["redis"]["command"]]
    flags = {
        command[i].removeprefix("--"): command[i + 1] for i, a in enumerate(command) if a.startswith("--")
    }
    conf = {}
    for line in (ROOT / "deploy" / "redis" / "redis.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    assert {k: flags.get(k) for k in wanted} == wanted
    assert {k: conf.get(k) for k in wanted} == wanted
