"""The chart's monitoring objects, checked with Prometheus's own promtool and the operator's
real pod template: PodMonitors that select model pods, alert rules that fire as documented,
dashboard queries that parse."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from batcomputer_dev.prometheus_process import dashboard_queries
from batcomputer_dev.prometheus_scrape import pod_targets, scrape_configs
from batcomputer_operator import manifests
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.spec import parse_spec

REPO = Path(__file__).parents[2]
CHART = REPO / "helm" / "batcomputer-operator"
RULES_TEST = REPO / "tests" / "data" / "prometheus" / "rules_test.yaml"
DASHBOARD = CHART / "dashboards" / "batcomputer-models.json"
ALL_ON = (
    "--set",
    "monitoring.podMonitors.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.grafanaDashboard.enabled=true",
)


def _promtool(*args: str, cwd: Path | None = None, timeout: float = 60) -> str:
    """What ``promtool *args`` printed; the test fails with its complaint unless it accepted."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: devtools/bootstrap.sh installs Debian's prometheus")
    result = subprocess.run(
        [found, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _render(helm, *args: str) -> list[dict]:
    result = helm("template", "batcomputer", CHART, "--namespace", "batcomputer-system", *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.fixture(scope="module")
def rendered(helm) -> list[dict]:
    return _render(helm, *ALL_ON)


@pytest.fixture(scope="module")
def rules_file(rendered, tmp_path_factory) -> Path:
    (rule,) = _kind(rendered, "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_monitoring_is_off_by_default(helm):
    kinds = {doc["kind"] for doc in _render(helm)}
    assert not kinds & {"PodMonitor", "PrometheusRule"}
    configmaps = [doc["metadata"]["name"] for doc in _render(helm) if doc["kind"] == "ConfigMap"]
    assert not any(name.endswith("-dashboard") for name in configmaps)


def test_the_model_pod_monitor_selects_the_operators_pods_on_their_named_port(rendered):
    monitors = {doc["metadata"]["name"]: doc for doc in _kind(rendered, "PodMonitor")}
    models = monitors["batcomputer-batcomputer-operator-models"]["spec"]
    config = OperatorConfig(server_image="ghcr.io/batcomputer/batcomputer-server:0.1.0")
    spec = parse_spec(
        {"version": "1.4.2", "source": {"uri": "http://10.244.0.1:10000/devstoreaccount1/m/c"}}
    )
    owner = manifests.Owner(name="crime", namespace="models", uid="0b9c7a8e-1111-2222-3333-4444")
    deployment = manifests.deployment(owner, spec, config)
    pod = deployment["spec"]["template"]
    assert models["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = models["podMetricsEndpoints"]
    ports = {port["name"] for c in pod["spec"]["containers"] for port in c.get("ports", [])}
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    relabelled = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert relabelled == {
        "model": ["__meta_kubernetes_pod_label_batcomputer_io_model"],
        "model_version": ["__meta_kubernetes_pod_annotation_batcomputer_io_version"],
    }
    assert pod["metadata"]["labels"]["batcomputer.io/model"] == "crime"
    assert pod["metadata"]["annotations"]["batcomputer.io/version"] == "1.4.2"
    assert models["namespaceSelector"] == {"matchNames": ["batcomputer-system"]}


def test_serving_every_namespace_widens_the_model_pod_monitor(helm):
    docs = _render(helm, *ALL_ON, "--set", "watchAllNamespaces=true")
    monitor = next(d for d in _kind(docs, "PodMonitor") if d["metadata"]["name"].endswith("models"))
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def test_watched_namespaces_narrow_the_model_pod_monitor(helm):
    docs = _render(helm, *ALL_ON, "--set-json", 'watchNamespaces=["models","staging"]')
    monitor = next(d for d in _kind(docs, "PodMonitor") if d["metadata"]["name"].endswith("models"))
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["models", "staging"]}


def test_extra_labels_reach_the_monitors_and_rules(helm):
    docs = _render(helm, *ALL_ON, "--set", "monitoring.labels.release=kube-prometheus-stack")
    for doc in [*_kind(docs, "PodMonitor"), *_kind(docs, "PrometheusRule")]:
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_promtool_accepts_the_rules(rules_file):
    assert "SUCCESS: 8 rules found" in _promtool("check", "rules", str(rules_file))


def test_every_alert_fires_as_documented_in_promtool_unit_tests(rules_file):
    tests = yaml.safe_load(RULES_TEST.read_text())
    tests["rule_files"] = [rules_file.name]
    test_file = rules_file.with_name("rules_test.yaml")
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    _promtool("test", "rules", test_file.name, cwd=test_file.parent, timeout=120)
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(rules_file.read_text())["groups"]
        for rule in group["rules"]
    }
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert alerts == tested


def test_rule_thresholds_come_from_values(helm):
    docs = _render(
        helm,
        *ALL_ON,
        "--set-json",
        "monitoring.prometheusRule.driftPsi=0.4",
        "--set-json",
        "monitoring.prometheusRule.errorRatio=0.01",
    )
    (rule,) = _kind(docs, "PrometheusRule")
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["BatcomputerInputDrift"].rstrip().endswith("> 0.4")
    assert exprs["BatcomputerModelErrorRatio"].rstrip().endswith("> 0.01")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (("--set-json", "monitoring.prometheusRule.errorRatio=2"), "errorRatio"),
        (("--set", "monitoring.interval=often"), "interval"),
        (("--set", "monitoring.podMonitors.scrape=yes"), "scrape"),
    ],
)
def test_bad_monitoring_values_are_refused_naming_the_field(helm, values, field):
    result = helm("template", "batcomputer", CHART, *values, check=False)
    assert result.returncode != 0
    assert field in result.stderr


def test_the_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar(rendered):
    (configmap,) = [
        doc
        for doc in _kind(rendered, "ConfigMap")
        if doc["metadata"]["name"] == "batcomputer-batcomputer-operator-dashboard"
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["batcomputer-models.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Requests per second", "Errors per second", "Input drift (PSI)"} <= titles
    variables = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "model", "model_version"]


def test_every_dashboard_query_is_valid_promql(tmp_path):
    queries = list(dashboard_queries(DASHBOARD).values())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(queries)} rules found" in _promtool("check", "rules", str(path))


def test_the_pod_monitors_become_a_scrape_configuration_promtool_accepts(rendered, tmp_path):
    pods = [
        {
            "metadata": {
                "name": "crime-v1-4-2-abc",
                "namespace": "models",
                "labels": {
                    "app.kubernetes.io/name": "batcomputer-model",
                    "batcomputer.io/model": "crime",
                },
                "annotations": {"batcomputer.io/version": "1.4.2+build.7"},
            },
            "spec": {
                "containers": [
                    {"name": "server", "ports": [{"name": "http", "containerPort": 8000}]}
                ]
            },
            "status": {"phase": "Running", "podIP": "10.244.0.7"},
        },
        # Not scheduled yet: no address, so no target.
        {
            "metadata": {"name": "pending", "namespace": "models"},
            "spec": {"containers": [{"name": "server"}]},
            "status": {"phase": "Pending"},
        },
    ]
    groups = pod_targets(pods)
    assert groups == [
        {
            "targets": ["10.244.0.7:8000"],
            "labels": {
                "__meta_kubernetes_namespace": "models",
                "__meta_kubernetes_pod_name": "crime-v1-4-2-abc",
                "__meta_kubernetes_pod_ip": "10.244.0.7",
                "__meta_kubernetes_pod_phase": "Running",
                "__meta_kubernetes_pod_label_app_kubernetes_io_name": "batcomputer-model",
                "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
                "__meta_kubernetes_pod_label_batcomputer_io_model": "crime",
                "__meta_kubernetes_pod_labelpresent_batcomputer_io_model": "true",
                "__meta_kubernetes_pod_annotation_batcomputer_io_version": "1.4.2+build.7",
                "__meta_kubernetes_pod_annotationpresent_batcomputer_io_version": "true",
                "__meta_kubernetes_pod_container_name": "server",
                "__meta_kubernetes_pod_container_port_name": "http",
                "__meta_kubernetes_pod_container_port_number": "8000",
            },
        }
    ]
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(groups))
    configs = [
        config
        for monitor in _kind(rendered, "PodMonitor")
        for config in scrape_configs(monitor, str(targets))
    ]
    assert [config["metrics_path"] for config in configs] == ["/metrics", "/metrics"]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": configs}))
    _promtool("check", "config", str(config))
