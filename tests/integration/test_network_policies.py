"""The chart's NetworkPolicies evaluated by a real policy engine (network-config-analyzer)
over the chart, the operator's manifests for the example models, and client workloads in
the models' namespace, a monitoring namespace and an unrelated one."""

from __future__ import annotations

import json

import pytest
import yaml

from batcomputer_dev import netpol_tool, security_scan
from batcomputer_operator.config import OperatorConfig

BLOB = "10.244.0.1/32"
API = "10.244.0.9/32"
EVERYWHERE = "0.0.0.0-255.255.255.255"
OPERATOR = "batcomputer-system/batcomputer-batcomputer-operator"


def _namespace(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"name": name}},
    }


def _client(namespace: str, name: str) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "client", "image": "client:1"}]},
            },
        },
    }


@pytest.fixture(scope="module")
def cluster(helm, tmp_path_factory) -> tuple[dict, list[str], int | None]:
    folder = tmp_path_factory.mktemp("netpol")
    endpoints = {
        "blobStorage": {"cidrs": [BLOB], "ports": [10000]},
        "apiServer": {"cidrs": [API], "ports": [6443]},
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    }
    chart = security_scan.render_chart(
        helm,
        *("--set-json", 'watchNamespaces=["models"]'),
        *(
            f"--set-json=networkPolicy.{key}={json.dumps(value)}"
            for key, value in endpoints.items()
        ),
    )
    # Not chart.yaml: NCA takes a file of that name for a Helm chart to render.
    (folder / "rendered-chart.yaml").write_text(chart)
    models = []
    for batmodel in security_scan.example_batmodels():
        manifests = security_scan.operator_manifests(batmodel, OperatorConfig())
        models.extend(
            f"models/{m['metadata']['name']}" for m in manifests if m["kind"] == "Deployment"
        )
        (folder / f"{batmodel['metadata']['name']}.yaml").write_text(yaml.safe_dump_all(manifests))
    others = [
        *map(_namespace, ("models", "monitoring", "other", "batcomputer-system")),
        _client("models", "neighbour"),
        _client("monitoring", "prometheus"),
        _client("other", "stranger"),
    ]
    (folder / "clients.yaml").write_text(yaml.safe_dump_all(others))
    values = yaml.safe_load((security_scan.CHART / "values.yaml").read_text())
    return netpol_tool.connectivity(folder), models, values.get("metricsPort")


SERVING = {"{protocols:TCP,dst_ports:8000}"}
DNS = "{protocols:TCP, UDP,dst_ports:53}"


def test_the_example_models_are_in_the_evaluated_cluster(cluster):
    _, models, _ = cluster
    assert len(models) >= 2


def test_model_pods_answer_their_namespace_on_the_serving_port_only(cluster):
    edges, models, _ = cluster
    for model in models:
        assert edges[("models/neighbour", model)] == SERVING


def test_monitoring_may_scrape_models_and_the_operator_on_their_metrics_ports(cluster):
    edges, models, metrics_port = cluster
    for model in models:
        assert edges[("monitoring/prometheus", model)] == SERVING
    operator_ports = ",".join(str(p) for p in sorted({8080, metrics_port or 8080}))
    assert edges[("monitoring/prometheus", OPERATOR)] == {
        "{protocols:TCP,dst_ports:" + operator_ports + "}"
    }


def test_nobody_else_reaches_a_model(cluster):
    edges, models, _ = cluster
    callers = {source for (source, destination) in edges if destination in models}
    # The operator reads the models' /metrics to analyse Canary rollouts; model pods call
    # each other with a Shadow rollout's copies.
    assert callers == {"models/neighbour", "monitoring/prometheus", OPERATOR, *models}


def test_model_pods_reach_each_other_on_the_serving_port_only(cluster):
    edges, models, _ = cluster
    for source in models:
        for destination in set(models) - {source}:
            assert edges[(source, destination)] == SERVING


def test_model_pods_reach_only_dns_the_blob_endpoint_and_model_pods(cluster):
    edges, models, _ = cluster
    for model in models:
        reached = {
            dst: allowed
            for (src, dst), allowed in edges.items()
            if src == model and dst not in models
        }
        assert reached.pop("10.244.0.1") == {
            "{protocols:TCP,dst_ports:53,10000}",
            "{protocols:UDP,dst_ports:53}",
        }
        # DNS may be answered from anywhere (a node-local cache, a cluster DNS pod)
        assert reached and all(allowed == {DNS} for allowed in reached.values()), reached


def test_the_operator_reaches_only_the_api_server_and_the_models_metrics_port(cluster):
    edges, models, _ = cluster
    reached = {dst: allowed for (src, dst), allowed in edges.items() if src == OPERATOR}
    assert reached == {
        "10.244.0.9": {"{protocols:TCP,dst_ports:6443}"},
        **dict.fromkeys(models, SERVING),
    }


def test_a_stranger_reaches_only_the_operator_probe_port(cluster):
    edges, models, _ = cluster
    assert not [model for model in models if ("other/stranger", model) in edges]
    assert edges[("other/stranger", OPERATOR)] == {"{protocols:TCP,dst_ports:8080}"}
