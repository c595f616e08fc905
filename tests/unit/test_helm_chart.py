"""The operator's Helm chart, checked with the real helm 3 binary (lint, template, package)."""

import tarfile
from pathlib import Path

import pytest
import yaml

from batcomputer_operator.config import load_config

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
    ("", "pods"): {"get", "list", "watch"},
    ("", "endpoints"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
}
_READ = {"get", "list", "watch"}


def _render(helm, *args: str) -> list[dict]:
    result = helm("template", "batcomputer", CHART, "--namespace", RELEASE_NAMESPACE, *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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
def cluster_wide(helm) -> list[dict]:
    return _render(helm)


@pytest.fixture(scope="module")
def namespaced(helm) -> list[dict]:
    return _render(helm, "--set-json", 'watchNamespaces=["models","staging"]')


@pytest.mark.parametrize(
    "values",
    [[], ["--set-json", 'watchNamespaces=["models"]', "--set", "defaultIngressHost=ml.example"]],
    ids=["defaults", "namespaced"],
)
def test_chart_passes_strict_lint(helm, values):
    result = helm("lint", "--strict", CHART, *values)
    assert "0 chart(s) failed" in result.stdout


def test_default_install_runs_the_published_operator_image(cluster_wide):
    container = _operator_container(cluster_wide)
    assert container["image"] == "ghcr.io/batcomputer/batcomputer-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    config = load_config([], {env["name"]: env["value"] for env in container["env"]})
    assert config.server_image == "ghcr.io/batcomputer/batcomputer-server:0.1.0"
    assert config.namespaces == ()
    assert config.require_pinned_bundles is False  # unpinned models served, marked Pinned=False


def test_values_reach_the_operator_configuration(namespaced, helm):
    docs = _render(
        helm,
        *("--set-json", 'watchNamespaces=["models","staging"]'),
        *("--set", "defaultIngressClass=nginx", "--set", "defaultIngressHost=ml.example.org"),
        *("--set", "serverImage=registry.example/server:2.0.0", "--set", "livenessPort=9090"),
        *("--set", "requirePinnedBundles=true"),
    )
    container = _operator_container(docs)
    config = load_config([], {env["name"]: env["value"] for env in container["env"]})
    assert config.namespaces == ("models", "staging")
    assert config.ingress_class == "nginx"
    assert config.ingress_host == "ml.example.org"
    assert config.server_image == "registry.example/server:2.0.0"
    assert config.liveness_port == 9090
    assert config.require_pinned_bundles is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["ports"] == [{"name": "liveness", "containerPort": 9090, "protocol": "TCP"}]


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
    # kopf runs standalone: two operators at once would fight over the same objects.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_cluster_wide_rbac_is_exactly_what_the_operator_needs(cluster_wide):
    roles = {role["metadata"]["name"]: role for role in _by_kind(cluster_wide, "ClusterRole")}
    assert _grants(roles["batcomputer-batcomputer-operator"]) == _WORKLOAD_GRANTS
    assert _grants(roles["batcomputer-batcomputer-operator-discovery"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): _READ,
    }
    bound = {b["roleRef"]["name"] for b in _by_kind(cluster_wide, "ClusterRoleBinding")}
    assert bound == set(roles)
    assert not _by_kind(cluster_wide, "Role")


def test_namespaced_rbac_grants_nothing_outside_the_watched_namespaces(namespaced):
    roles = _by_kind(namespaced, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["models", "staging"]
    for role in roles:
        assert _grants(role) == _WORKLOAD_GRANTS
    bindings = _by_kind(namespaced, "RoleBinding")
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


@pytest.mark.parametrize("render", ["cluster_wide", "namespaced"])
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
    ],
)
def test_schema_rejects_bad_values_naming_the_field(helm, values, field):
    result = helm("template", "batcomputer", CHART, *values, check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr
