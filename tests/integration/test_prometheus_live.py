"""A real Prometheus (Debian's) scrapes the real model server as the chart's PodMonitor
tells the Prometheus Operator to, with the chart's alert rules loaded; every dashboard
panel's query returns series.

The pod it scrapes is the operator's own pod template for the model (labels, version
annotation, named port) with the address of a ``batcomputer-server`` running here;
discovery is played by a file holding the labels Kubernetes pod discovery would give.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from _server_process import running_server, wait_until_workers_loaded

from batcomputer_dev.prometheus_process import dashboard_queries, running_prometheus
from batcomputer_dev.prometheus_scrape import pod_targets, scrape_configs
from batcomputer_operator import manifests
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.spec import parse_spec

REPO = Path(__file__).parents[2]
CHART = REPO / "helm" / "batcomputer-operator"
DASHBOARD = CHART / "dashboards" / "batcomputer-models.json"
NAMESPACE = "models"


def _rendered(helm) -> list[dict]:
    result = helm(
        *("template", "batcomputer", CHART, "--namespace", "batcomputer-system"),
        *("--set-json", f'watchNamespaces=["{NAMESPACE}"]'),
        *("--set", "monitoring.podMonitors.enabled=true"),
        *("--set", "monitoring.prometheusRule.enabled=true"),
        *("--set", "monitoring.interval=1s"),
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _pod(server_url: str) -> dict:
    """The operator's pod for titanic 1.0.0, as the API server would report it running here."""
    spec = parse_spec(
        {"version": "1.0.0", "source": {"uri": "http://10.244.0.1:10000/devstoreaccount1/m/t"}}
    )
    owner = manifests.Owner(name="titanic", namespace=NAMESPACE, uid="1f0e2d3c-aaaa-bbbb-cccc")
    template = manifests.deployment(owner, spec, OperatorConfig())["spec"]["template"]
    host, port = server_url.removeprefix("http://").split(":")
    containers = [
        {
            **container,
            "ports": [{**p, "containerPort": int(port)} for p in container.get("ports", [])],
        }
        for container in template["spec"]["containers"]
    ]
    return {
        "metadata": {
            **template["metadata"],
            "name": "titanic-v1-0-0-5d9f7",
            "namespace": NAMESPACE,
        },
        "spec": {**template["spec"], "containers": containers},
        "status": {"phase": "Running", "podIP": host},
    }


@pytest.fixture(scope="module")
def prometheus(helm, trained_bundles, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus-live")
    docs = _rendered(helm)
    (rule,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    (monitor,) = [
        doc
        for doc in docs
        if doc["kind"] == "PodMonitor" and doc["metadata"]["name"].endswith("-models")
    ]
    with running_server(trained_bundles.titanic, workdir / "server") as server:
        wait_until_workers_loaded(server)
        targets = workdir / "targets.json"
        targets.write_text(json.dumps(pod_targets([_pod(server.url)])))
        configs = scrape_configs(monitor, str(targets))
        with running_prometheus(workdir / "prometheus", configs, rule["spec"]["groups"]) as live:
            yield live, server


def test_the_model_pod_is_scraped_with_model_and_version_labels(prometheus):
    live, _ = prometheus
    live.wait_until(lambda: live.query("up == 1"), "the model pod's target up")
    (target,) = live.get("/api/v1/targets")["activeTargets"]
    labels = target["labels"]
    assert labels["model"] == "titanic"
    assert labels["model_version"] == "1.0.0"
    assert labels["namespace"] == NAMESPACE
    assert labels["pod"] == "titanic-v1-0-0-5d9f7"
    assert labels["container"] == "server"
    assert labels["endpoint"] == "http"
    assert labels["job"] == "batcomputer-system/batcomputer-batcomputer-operator-models"


def test_the_alert_rules_load_and_evaluate(prometheus):
    live, _ = prometheus

    def evaluated() -> list[dict]:
        groups = live.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return (
            rules
            if rules and all(r.get("lastEvaluation", "0001").startswith("20") for r in rules)
            else []
        )

    live.wait_until(evaluated, "every rule evaluated")
    rules = evaluated()
    assert len(rules) == 8
    assert all(rule["health"] == "ok" for rule in rules), rules
    firing = [rule["name"] for rule in rules if rule["state"] != "inactive"]
    assert firing == []  # a healthy, ready model raises nothing


def test_every_dashboard_panel_query_returns_series(prometheus):
    live, server = prometheus
    passenger = httpx.get(server.url + "/api/predict/params").json()["example"]
    for _ in range(8):  # enough rows for both workers' drift windows, over a few scrapes
        for _ in range(4):
            batch = [passenger] * 16
            assert httpx.post(server.url + "/api/predict", json=batch).status_code == 200
        assert httpx.post(server.url + "/api/predict", json={"age": 1}).status_code == 400
        time.sleep(0.5)
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) >= 9

    def empty() -> list[str]:
        return [title for title, expr in queries.items() if not live.query(expr)]

    live.wait_until(lambda: not empty(), "series for every panel")
    drift = live.query(queries["Input drift (PSI) (A)"])
    assert {series["metric"]["input"] for series in drift} >= {"sex", "pclass", "age"}
    assert all(series["metric"]["model"] == "titanic" for series in drift)
