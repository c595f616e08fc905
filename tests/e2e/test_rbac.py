"""The operator's ServiceAccount, asked of the real API server (`kubectl auth can-i --as=`):
allowed exactly what it needs, refused Secrets, other namespaces and CRD writes."""

import secrets

import pytest
import yaml
from _e2e_support import CHART

BATMODELS = "batmodels.batcomputer.io"
CRDS = "customresourcedefinitions.apiextensions.k8s.io"
DEPLOYMENTS = "deployments.apps"
INGRESSES = "ingresses.networking.k8s.io"

# (verb, resource, subresource) the operator uses in each namespace it watches.
NEEDED_IN_WATCHED = [
    *[(verb, BATMODELS, "") for verb in ("get", "list", "watch")],
    ("patch", BATMODELS, "status"),
    *[
        (verb, resource, "")
        for resource in (DEPLOYMENTS, "services", INGRESSES, "configmaps")
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    ],
    *[
        (verb, resource, "")
        for resource in ("pods", "endpointslices.discovery.k8s.io")
        for verb in ("get", "list", "watch")
    ],
    ("create", "events", ""),
]
REFUSED_IN_WATCHED = [
    *[(verb, "secrets", "") for verb in ("get", "list", "watch", "create")],
    # The spec belongs to its author (Git, for GitOps): the operator only writes status.
    *[(verb, BATMODELS, "") for verb in ("create", "update", "patch", "delete")],
    ("create", "pods", ""),
    ("delete", "pods", ""),
    # EndpointSlices are the endpoints controller's to write; the operator only reads them.
    *[
        (verb, "endpointslices.discovery.k8s.io", "")
        for verb in ("create", "update", "patch", "delete")
    ],
    *[(verb, "endpoints", "") for verb in ("get", "list", "watch")],
    ("create", "pods", "exec"),
    ("create", "serviceaccounts", "token"),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
]
REFUSED_CLUSTER_WIDE = [
    *[(verb, CRDS, "") for verb in ("create", "update", "patch", "delete")],
    ("list", "nodes", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
]


def _can_i(cluster, subject: str, verb: str, resource: str, subresource: str, *scope: str) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={subject}", *scope]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = cluster.kubectl(*args, check=False).strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)} answered {answer!r}"
    return answer == "yes"


def _label(rule: tuple[str, str, str]) -> str:
    verb, resource, subresource = rule
    return f"{verb} {resource}{'/' + subresource if subresource else ''}"


@pytest.mark.parametrize("rule", NEEDED_IN_WATCHED, ids=_label)
def test_allowed_what_it_needs_in_the_watched_namespace(kube_cluster, operator_release, rule):
    scope = ("-n", operator_release.models_namespace)
    assert _can_i(kube_cluster, operator_release.subject, *rule, *scope)


@pytest.mark.parametrize(
    "rule", [("list", CRDS, ""), ("watch", CRDS, ""), ("list", "namespaces", "")], ids=_label
)
def test_allowed_the_cluster_reads_kopf_needs(kube_cluster, operator_release, rule):
    assert _can_i(kube_cluster, operator_release.subject, *rule)


@pytest.mark.parametrize("rule", REFUSED_IN_WATCHED, ids=_label)
def test_refused_secrets_and_spec_writes_in_the_watched_namespace(
    kube_cluster, operator_release, rule
):
    scope = ("-n", operator_release.models_namespace)
    assert not _can_i(kube_cluster, operator_release.subject, *rule, *scope)


@pytest.mark.parametrize("namespace", ["default", "kube-system", "operator"])
@pytest.mark.parametrize(
    "rule",
    [
        ("list", BATMODELS, ""),
        ("create", DEPLOYMENTS, ""),
        ("list", "pods", ""),
        ("get", "secrets", ""),
    ],
    ids=_label,
)
def test_refused_everything_in_namespaces_it_does_not_watch(
    kube_cluster, operator_release, namespace, rule
):
    namespace = operator_release.namespace if namespace == "operator" else namespace
    assert not _can_i(kube_cluster, operator_release.subject, *rule, "-n", namespace)


@pytest.mark.parametrize("rule", REFUSED_CLUSTER_WIDE, ids=_label)
def test_refused_crd_writes_and_cluster_administration(kube_cluster, operator_release, rule):
    assert not _can_i(kube_cluster, operator_release.subject, *rule)


def test_cluster_wide_install_still_has_no_secret_access(helm, kube_cluster):
    """The every-namespace RBAC, rendered by the chart and applied for real."""
    suffix = secrets.token_hex(3)
    release, namespace = f"bc-rbac-{suffix}", f"bc-rbac-{suffix}"
    rendered = helm(
        "template", release, CHART, "--namespace", namespace, "--set", "watchAllNamespaces=true"
    ).stdout
    rbac = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    subject = f"system:serviceaccount:{namespace}:{release}-batcomputer-operator"
    kube_cluster.kubectl("create", "namespace", namespace)
    try:
        kube_cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(rbac))
        for other in ("default", namespace):
            assert _can_i(kube_cluster, subject, "watch", BATMODELS, "", "-n", other)
            assert _can_i(kube_cluster, subject, "patch", DEPLOYMENTS, "", "-n", other)
            assert not _can_i(kube_cluster, subject, "get", "secrets", "", "-n", other)
        assert _can_i(kube_cluster, subject, "list", BATMODELS, "", "--all-namespaces")
        assert not _can_i(kube_cluster, subject, "list", "secrets", "", "--all-namespaces")
        assert not _can_i(kube_cluster, subject, "patch", BATMODELS, "", "--all-namespaces")
        assert not _can_i(kube_cluster, subject, "delete", CRDS, "")
        # Watching every namespace, kopf needs no namespace list; it is not granted.
        assert not _can_i(kube_cluster, subject, "list", "namespaces", "")
    finally:
        kube_cluster.kubectl(
            "delete",
            "-f",
            "-",
            "--ignore-not-found",
            input_text=yaml.safe_dump_all(rbac),
            check=False,
        )
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
