"""Prometheus rules and the Grafana dashboard against the real processes.

(a) promtool accepts the configs and rules, and the rule unit tests pass; every alert is unit-tested both
    firing and not firing, and links to a runbook section that exists.
(b) Metric contract: every metric name used by the dashboard and the alerts is exported by the real
    consumer or the real API (scraped from /metrics after real traffic).
(c) A real Prometheus server scrapes both, loads the alert rules, and answers a dashboard query with data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from leaderboard.net import free_port
from leaderboard.settings import Settings
from tests.procs import (
    ApiProcess,
    ConsumerProcess,
    consumer_and_api,
    leaderboard_cli,
    stop_process,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "leaderboard.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
DASHBOARD_PROBE = "sum(rate(leaderboard_consumer_events_applied_total[1m]))"

# Series Prometheus makes itself (not exported by our code).
SYNTHETIC = {"up"}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv",
    "exp", "floor", "group", "histogram_quantile", "holt_winters", "idelta", "increase", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log2", "log10", "max", "max_over_time",
    "min", "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum", "sum_over_time",
    "time", "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "inf", "nan"}  # fmt: skip
SUFFIX_TYPES = {
    "_total": {"counter"},
    "_created": {"counter", "histogram", "summary"},
    "_bucket": {"histogram"},
    "_sum": {"histogram", "summary"},
    "_count": {"histogram", "summary"},
}


# ---------------------------------------------------------------- expressions


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(doc["panels"])
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (not functions, keywords, labels or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    # label lists of grouping / vector matching
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in FUNCTIONS or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_parser() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{status=~"5.."}[5m]))) > 0.25'
    ) == {"x_bucket"}
    assert metric_names("time() - max(a_ts) > 300 and on() sum(b) > 0 unless c offset 5m") == {
        "a_ts",
        "b",
        "c",
    }
    assert metric_names("sum(deriv(lag[10m:1m])) / ignoring(reason) group_left sum(y_total)") == {
        "lag",
        "y_total",
    }


def all_referenced() -> dict[str, set[str]]:
    """Metric name -> where it is used."""
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add("dashboard")
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    return used


# ---------------------------------------------------------------- (a) promtool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "deploy/prometheus/prometheus.yml"),
        ("check", "config", "deploy/prometheus/prometheus-compose.yml"),
        ("check", "rules", "deploy/prometheus/alerts.yml"),
        ("test", "rules", "deploy/prometheus/alerts_test.yml"),
    ],
    ids=lambda a: " ".join(a[:2]) + " " + Path(a[2]).name,
)
def test_promtool(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_alert_is_complete_and_unit_tested() -> None:
    anchors = _anchors((ROOT / "docs" / "operations.md").read_text())
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    rules = alert_rules()
    assert len(rules) >= 10
    for rule in rules:
        name = rule["alert"]
        assert rule.get("for"), f"{name}: no 'for:' (would page on a single bad scrape)"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes.get("summary"), name
        assert notes.get("description"), name
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/operations.md", name
        assert anchor in anchors, f"{name}: runbook anchor #{anchor} not in docs/operations.md"
        assert name in fires, f"{name}: no unit test where it fires"
        assert name in quiet, f"{name}: no unit test where it stays quiet"


# ---------------------------------------------------------------- running processes


@pytest.fixture
def running(config: Settings, tmp_path: Path) -> Iterator[tuple[ConsumerProcess, ApiProcess]]:
    """A real consumer and API with a few hundred events applied (valid, duplicate and invalid)."""
    with consumer_and_api(
        config,
        tmp_path,
        *("--count", "200", "--rate", "0", "--players", "50", "--display-names"),
        *("--duplicate-ratio", "0.05", "--invalid-ratio", "0.05", "--seed", "7"),
    ) as (consumer, api):
        # Labelled API series appear on first use of each route.
        for path in (
            "/v1/leaderboards",
            "/v1/leaderboards/global/entries?period=all_time&limit=10",
            "/v1/leaderboards/global/stats?period=all_time",
            "/v1/leaderboards/nobody-board/entries",
        ):
            status, _ = api.get(path)
            assert status in (200, 404), path
        yield consumer, api


def families(body: bytes) -> dict[str, str]:
    """Metric family name -> type, from a Prometheus text exposition."""
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


def exported_by(name: str, fams: dict[str, str]) -> bool:
    """Whether a series name is one the exposition really produces (a counter only as ..._total)."""
    if fams.get(name) in ("gauge", "unknown", "untyped"):
        return True
    for suffix, types in SUFFIX_TYPES.items():
        if name.endswith(suffix) and fams.get(name.removesuffix(suffix)) in types:
            return True
    return False


def test_dashboard_and_alerts_use_only_exported_metrics(
    running: tuple[ConsumerProcess, ApiProcess],
) -> None:
    consumer, api = running
    status_c, body_c = consumer.get("/metrics")
    status_a, body_a = api.get("/metrics")
    assert status_c == 200
    assert status_a == 200
    fams = families(body_c) | families(body_a)
    # Negative control: a counter is only selectable as ..._total.
    assert not exported_by("leaderboard_consumer_events_applied", fams)
    # Traffic really flowed, so labelled series are not just declared.
    assert consumer.metric("leaderboard_consumer_events_applied_total") > 0
    assert 'leaderboard_consumer_events_dead_lettered_total{reason="' in body_c.decode()
    assert 'leaderboard_api_requests_total{method="GET",route="/v1/leaderboards/{board}/entries"' in (
        body_a.decode()
    )

    used = all_referenced()
    assert len(used) >= 15, used
    missing = {
        name: sorted(where)
        for name, where in used.items()
        if name not in SYNTHETIC and not exported_by(name, fams)
    }
    assert not missing, f"referenced but not exported: {missing}"
    # The converse, as a reminder: every family of ours is on the dashboard or in an alert.
    # (prometheus_client exposes each counter/histogram creation time as a separate *_created gauge)
    ours = {n for n in fams if n.startswith("leaderboard_") and not n.endswith("_created")}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert ours <= shown, f"exported but on no panel: {sorted(ours - shown)}"


# ---------------------------------------------------------------- (c) real Prometheus


def prom_get(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_real_prometheus_scrapes_and_answers_dashboard_query(
    running: tuple[ConsumerProcess, ApiProcess], config: Settings, tmp_path: Path
) -> None:
    consumer, api = running
    exprs = dashboard_exprs()
    assert DASHBOARD_PROBE in exprs
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(PROM / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "leaderboard-consumer",
                        "static_configs": [{"targets": [f"127.0.0.1:{consumer.port}"]}],
                    },
                    {
                        "job_name": "leaderboard-api",
                        "static_configs": [{"targets": [f"127.0.0.1:{api.port}"]}],
                    },
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def targets_up() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            doc = prom_get(port, "/api/v1/targets")
            active = doc["data"]["activeTargets"] if doc else []
            return len(active) == 2 and all(t["health"] == "up" for t in active)

        wait_until(targets_up, 60, "both targets up in Prometheus")

        rules = prom_get(port, "/api/v1/rules")
        loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
        assert len(loaded) == len(alert_rules())
        assert all(r["health"] != "err" for r in loaded), [r for r in loaded if r["health"] == "err"]

        # More traffic while Prometheus watches, so rate() over its own samples is above zero.
        sim = leaderboard_cli(
            config, "simulate", "--count", "150", "--rate", "50", "--players", "50", timeout=120
        )
        assert sim.returncode == 0, sim.stderr

        def probe() -> list[Any]:
            doc = prom_get(port, "/api/v1/query", query=DASHBOARD_PROBE)
            result: list[Any] = doc["data"]["result"] if doc and doc["status"] == "success" else []
            return result if result and float(result[0]["value"][1]) > 0 else []

        wait_until(probe, 60, f"a positive answer to {DASHBOARD_PROBE}", interval=0.5)

        # Every dashboard query is valid PromQL for this server.
        for expr in exprs:
            doc = prom_get(port, "/api/v1/query", query=expr)
            assert doc is not None, expr
            assert doc["status"] == "success", (expr, doc)
    finally:
        stop_process(proc, 15)
        log.close()
