"""The operator's Helm chart, checked with the real helm 3 binary (lint, template, package)."""

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from batcomputer_dev.pytest_helm import HelmCommandError
from batcomputer_operator.config import BINARY_QUANTITY_PATTERN, load_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "batcomputer-operator"
CRD = REPO / "crds" / "batmodels.batcomputer.io.yaml"
RELEASE_NAMESPACE = "batcomputer-system"

# What the operator may do; anything else in a rendered rule is a least-privilege bug.
_WORKLOAD_GRANTS = {
    ("batcomputer.io", "batmodels"): {"get", "list", "watch"},
    ("batcomputer.io", "batmodels/status"): {"patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("networking.k8s.io", "ingresses"): {
        *("get", "list", "watch", "create", "update", "patch", "delete"),
    },
    ("", "configmaps"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
}
_READ = {"get", "list", "watch"}


def _render(helm, *args: str) -> list[dict]:
    result = helm("template", "batcomputer", CHART, "--namespace", RELEASE_NAMESPACE, *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _environment(container: dict, pod_namespace: str = RELEASE_NAMESPACE) -> dict[str, str]:
    """The container's environment as the kubelet fills it in."""
    env = {}
    for variable in container["env"]:
        source = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        env[variable["name"]] = (
            pod_namespace if source == "metadata.namespace" else variable["value"]
        )
    return env


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def _grants(role: dict) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _operator_container(docs: list[dict]) -> dict:
    (deployment,) = _by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def defaults(helm) -> list[dict]:
    return _render(helm)


@pytest.fixture(scope="module")
def cluster_wide(helm) -> list[dict]:
    return _render(helm, "--set", "watchAllNamespaces=true")


@pytest.fixture(scope="module")
def namespaced(helm) -> list[dict]:
    return _render(helm, "--set-json", 'watchNamespaces=["models","staging"]')


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set-json", 'watchNamespaces=["models"]', "--set", "defaultIngressHost=ml.example"],
        ["--set", "watchAllNamespaces=true"],
    ],
    ids=["defaults", "namespaced", "cluster-wide"],
)
def test_chart_passes_strict_lint(helm, values):
    result = helm("lint", "--strict", CHART, *values)
    assert "0 chart(s) failed" in result.stdout


def test_default_install_runs_the_published_operator_image(defaults):
    container = _operator_container(defaults)
    assert container["image"] == "ghcr.io/batcomputer/batcomputer-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    config = load_config([], _environment(container))
    assert config.server_image == "ghcr.io/batcomputer/batcomputer-server:0.1.0"
    assert config.namespaces == (RELEASE_NAMESPACE,)
    assert config.require_pinned_bundles is False  # unpinned models served, marked Pinned=False
    assert config.bundle_size_limit == 1 << 30


def test_values_reach_the_operator_configuration(namespaced, helm):
    docs = _render(
        helm,
        *("--set-json", 'watchNamespaces=["models","staging"]'),
        *("--set", "defaultIngressClass=nginx", "--set", "defaultIngressHost=ml.example.org"),
        *("--set", "serverImage=registry.example/server:2.0.0", "--set", "livenessPort=9090"),
        *("--set", "requirePinnedBundles=true", "--set", "bundleSizeLimit=512Mi"),
    )
    container = _operator_container(docs)
    config = load_config([], _environment(container))
    assert config.namespaces == ("models", "staging")
    assert config.ingress_class == "nginx"
    assert config.ingress_host == "ml.example.org"
    assert config.server_image == "registry.example/server:2.0.0"
    assert config.liveness_port == 9090
    assert config.require_pinned_bundles is True
    assert {"name": "BATCOMPUTER_BUNDLE_SIZE_LIMIT", "value": "512Mi"} in container["env"]
    assert config.bundle_size_limit == 512 << 20
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["ports"][0] == {"name": "liveness", "containerPort": 9090, "protocol": "TCP"}


def test_operator_pod_is_hardened(cluster_wide):
    (deployment,) = _by_kind(cluster_wide, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _operator_container(cluster_wide)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]


def test_two_replicas_one_active_by_lease_and_a_disruption_budget(cluster_wide):
    (deployment,) = _by_kind(cluster_wide, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    config = load_config([], _environment(_operator_container(cluster_wide)))
    assert config.leader_election_namespace == RELEASE_NAMESPACE
    (budget,) = _by_kind(cluster_wide, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    (lease_role,) = _by_kind(cluster_wide, "Role")
    assert lease_role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert _grants(lease_role) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def test_one_replica_without_leader_election_is_recreated_on_upgrade(helm):
    docs = _render(helm, *("--set", "replicas=1", "--set", "leaderElection.enabled=false"))
    (deployment,) = _by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "BATCOMPUTER_LEADER_ELECTION_NAMESPACE" not in _environment(_operator_container(docs))
    assert not _by_kind(docs, "PodDisruptionBudget")


def test_two_active_replicas_are_refused(helm):
    with pytest.raises(HelmCommandError, match=r"needs leaderElection\.enabled"):
        _render(helm, "--set", "leaderElection.enabled=false")


def test_metrics_are_served_on_a_named_port(cluster_wide):
    container = _operator_container(cluster_wide)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 8383}
    assert load_config([], _environment(container)).metrics_port == 8383


def test_by_default_only_the_release_namespace_is_served(defaults):
    workload_roles = [
        role for role in _by_kind(defaults, "Role") if _grants(role) == _WORKLOAD_GRANTS
    ]
    assert [role["metadata"]["namespace"] for role in workload_roles] == [RELEASE_NAMESPACE]
    (cluster_role,) = _by_kind(defaults, "ClusterRole")
    assert _grants(cluster_role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): _READ,
        ("", "namespaces"): _READ,
    }
    policies = {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in _by_kind(defaults, "NetworkPolicy")
    }
    assert (RELEASE_NAMESPACE, "batcomputer-models") in policies


def test_serving_every_namespace_takes_no_namespace_list(helm):
    with pytest.raises(HelmCommandError, match="leave watchNamespaces empty"):
        _render(helm, "--set", "watchAllNamespaces=true", "--set-json", 'watchNamespaces=["a"]')


def test_cluster_wide_rbac_is_exactly_what_the_operator_needs(cluster_wide):
    config = load_config([], _environment(_operator_container(cluster_wide)))
    assert config.namespaces == ()
    roles = {role["metadata"]["name"]: role for role in _by_kind(cluster_wide, "ClusterRole")}
    assert _grants(roles["batcomputer-batcomputer-operator"]) == _WORKLOAD_GRANTS
    assert _grants(roles["batcomputer-batcomputer-operator-discovery"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): _READ,
    }
    bound = {b["roleRef"]["name"] for b in _by_kind(cluster_wide, "ClusterRoleBinding")}
    assert bound == set(roles)
    assert [role["metadata"]["name"] for role in _by_kind(cluster_wide, "Role")] == [
        "batcomputer-batcomputer-operator-leader-election"
    ]


def test_namespaced_rbac_grants_nothing_outside_the_watched_namespaces(namespaced):
    roles = [
        r for r in _by_kind(namespaced, "Role") if "leader-election" not in r["metadata"]["name"]
    ]
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["models", "staging"]
    for role in roles:
        assert _grants(role) == _WORKLOAD_GRANTS
    bindings = [
        b
        for b in _by_kind(namespaced, "RoleBinding")
        if "leader-election" not in b["metadata"]["name"]
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["models", "staging"]
    for binding in bindings:
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "batcomputer-batcomputer-operator",
                "namespace": RELEASE_NAMESPACE,
            }
        ]
    (cluster_role,) = _by_kind(namespaced, "ClusterRole")
    assert _grants(cluster_role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): _READ,
        ("", "namespaces"): _READ,
    }


@pytest.mark.parametrize("render", ["defaults", "cluster_wide", "namespaced"])
def test_no_rule_touches_secrets_or_uses_wildcards(render, request):
    docs = request.getfixturevalue(render)
    roles = [doc for doc in docs if doc["kind"] in ("Role", "ClusterRole")]
    rules = [rule for role in roles for rule in role["rules"]]
    assert rules
    for rule in rules:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "resourceNames" not in rule or rule["resourceNames"]


def test_chart_crd_is_the_repository_crd():
    chart_crd = CHART / "crds" / CRD.name
    assert chart_crd.read_bytes() == CRD.read_bytes(), (
        f"{chart_crd.relative_to(REPO)} differs from {CRD.relative_to(REPO)}, the single source: "
        f"cp {CRD.relative_to(REPO)} {chart_crd.relative_to(REPO)}"
    )


def test_packaged_chart_carries_the_single_source_crd(helm, tmp_path):
    helm("package", CHART, "--destination", tmp_path)
    (package,) = tmp_path.glob("batcomputer-operator-*.tgz")
    with tarfile.open(package) as archive:
        member = archive.extractfile("batcomputer-operator/crds/batmodels.batcomputer.io.yaml")
        assert member is not None
        assert member.read() == CRD.read_bytes()


def test_rendered_crds_are_the_repository_crd(helm):
    result = helm("show", "crds", CHART)
    assert yaml.safe_load(result.stdout) == yaml.safe_load(CRD.read_text())


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set-json", 'watchNamespaces=["Models_Prod"]'], "/watchNamespaces/0"),
        (["--set-json", 'watchNamespaces=["models","models"]'], "/watchNamespaces"),
        (["--set", "serverImage=has space:1"], "/serverImage"),
        (["--set", "resources.limits.memory=lots"], "/resources/limits/memory"),
        (["--set", "livenessPort=80"], "/livenessPort"),
        (["--set", "runAsUser=0"], "/runAsUser"),
        (["--set", "defaultIngressHost=Not A Host"], "/defaultIngressHost"),
        (["--set", "watchNamespace=models"], "watchNamespace"),
        (["--set", "requirePinnedBundles=sometimes"], "/requirePinnedBundles"),
        (["--set", "watchAllNamespaces=yes"], "/watchAllNamespaces"),
        (["--set", "bundleSizeLimit=1G"], "/bundleSizeLimit"),
        (["--set", "bundleSizeLimit=0Gi"], "/bundleSizeLimit"),
        (["--set", "bundleSizeLimit=1073741824"], "/bundleSizeLimit"),
    ],
    ids=[
        "pull-policy",
        "namespace-not-dns-label",
        "duplicate-namespace",
        "image-with-space",
        "bad-quantity",
        "privileged-port",
        "root-user",
        "bad-host",
        "misspelt-key",
        "require-pinned-not-boolean",
        "watch-all-not-boolean",
        "bundle-size-decimal-unit",
        "bundle-size-zero",
        "bundle-size-not-a-string",
    ],
)
def test_schema_rejects_bad_values_naming_the_field(helm, values, field):
    result = helm("template", "batcomputer", CHART, *values, check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr


def test_the_chart_accepts_exactly_the_bundle_size_limits_the_operator_does():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["bundleSizeLimit"]["pattern"] == BINARY_QUANTITY_PATTERN
