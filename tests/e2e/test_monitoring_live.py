"""Debian's Prometheus scrapes the model pods (and the operator) on the cluster through the
chart's PodMonitors, as the Prometheus Operator would configure it; the chart's rules
evaluate, and every dashboard panel's query returns series from the live model pods.

Prometheus runs on the test host: pods are reachable at their IPs on the cluster's
bridge, and discovery is played by a file written from the pods the API server lists
(Debian builds Prometheus without Kubernetes discovery).
"""

from __future__ import annotations

import json
import time

import httpx
import yaml
from _e2e_support import CHART, CREDENTIALS_SECRET, batmodel, create, current, get, is_true

from batcomputer_dev.kube_testing import kubectl_json, wait_for
from batcomputer_dev.prometheus_process import dashboard_queries, running_prometheus
from batcomputer_dev.prometheus_scrape import pod_targets, scrape_configs
from batcomputer_operator.naming import MODEL_LABEL

DASHBOARD = CHART / "dashboards" / "batcomputer-models.json"


def _monitoring_objects(helm, release) -> list[dict]:
    result = helm(
        *("template", release.name, CHART, "--namespace", release.namespace),
        *("--set-json", f'watchNamespaces=["{release.models_namespace}"]'),
        *("--set", "monitoring.podMonitors.enabled=true"),
        *("--set", "monitoring.prometheusRule.enabled=true"),
        # Scraped every 2 s, so the panels' rates (over 30 s here) have samples soon.
        *("--set", "monitoring.interval=2s"),
    )
    kinds = ("PodMonitor", "PrometheusRule")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] in kinds]


def _serving_pods(cluster, namespace: str) -> list[dict]:
    """Running, ready pods (not ones an earlier test's deletion left terminating)."""
    return [
        pod
        for pod in kubectl_json(cluster, "get", "pods", "-n", namespace)["items"]
        if "deletionTimestamp" not in pod["metadata"]
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
    ]


def test_live_prometheus_scrapes_model_pods_and_answers_every_dashboard_query(
    helm, kube_cluster, operator_release, published_models, tmp_path
):
    namespace = operator_release.models_namespace
    create(
        kube_cluster,
        batmodel("titanic", published_models["titanic-1.0.0"], CREDENTIALS_SECRET),
        namespace,
    )
    wait_for(
        lambda: get(kube_cluster, "batmodel", "titanic", namespace),
        lambda obj: current(obj) and is_true(obj, "Ready"),
        "BatModel titanic Ready",
        timeout=300,
    )
    objects = _monitoring_objects(helm, operator_release)
    (rule,) = [doc for doc in objects if doc["kind"] == "PrometheusRule"]
    monitors = [doc for doc in objects if doc["kind"] == "PodMonitor"]
    targets = tmp_path / "targets.json"
    pods = _serving_pods(kube_cluster, namespace) + _serving_pods(
        kube_cluster, operator_release.namespace
    )
    targets.write_text(json.dumps(pod_targets(pods)))
    configs = [config for monitor in monitors for config in scrape_configs(monitor, str(targets))]
    # Other models of the e2e run may serve in the same namespace.
    model_pod = next(
        pod
        for pod in pods
        if pod["metadata"]["namespace"] == namespace
        and pod["metadata"].get("labels", {}).get(MODEL_LABEL) == "titanic"
    )
    server = f"http://{model_pod['status']['podIP']}:8000"
    operator_ports = {
        port.get("name")
        for pod in pods
        if pod["metadata"]["namespace"] == operator_release.namespace
        for container in pod["spec"]["containers"]
        for port in container.get("ports", [])
    }

    with running_prometheus(tmp_path / "prometheus", configs, rule["spec"]["groups"]) as live:
        live.wait_until(lambda: live.query('up{model="titanic"} == 1'), "the model pod scraped")
        (series,) = live.query('up{model="titanic"}')
        assert series["metric"]["model_version"] == "1.0.0"
        assert series["metric"]["namespace"] == namespace
        assert series["metric"]["pod"] == model_pod["metadata"]["name"]
        if "metrics" in operator_ports:  # the operator's own endpoint, where the chart has one
            live.wait_until(
                lambda: live.query('up{batcomputer_component="operator"} == 1'),
                "the operator scraped",
            )

        example = httpx.get(server + "/api/predict/params").json()["example"]
        oip_body = {
            "inputs": [
                {
                    "name": tensor["name"],
                    "shape": [16],
                    "datatype": tensor["datatype"],
                    "data": [example[tensor["name"]]] * 16,
                }
                for tensor in httpx.get(server + "/v2/models/titanic").json()["inputs"]
            ]
        }
        for _ in range(6):  # enough rows for both workers' drift windows
            for _ in range(4):
                batch = [example] * 16
                assert httpx.post(server + "/api/predict", json=batch).status_code == 200
                answer = httpx.post(server + "/v2/models/titanic/infer", json=oip_body)
                assert answer.status_code == 200
            assert httpx.post(server + "/api/predict", json={"age": -1}).status_code == 400
            time.sleep(1)

        queries = dashboard_queries(DASHBOARD)

        def panels_without_series() -> list[str]:
            return [title for title, expr in queries.items() if not live.query(expr)]

        wait_for(panels_without_series, lambda missing: not missing, "series for every panel")
        routes = {s["metric"]["route"] for s in live.query("batcomputer_http_requests_total")}
        assert {"/api/predict", "/v2/models/<name>/infer"} <= routes
        groups = live.get("/api/v1/rules")["groups"]
        assert all(r["health"] == "ok" for g in groups for r in g["rules"])

    kube_cluster.kubectl("delete", "batmodel", "titanic", "-n", namespace, "--wait=true")
