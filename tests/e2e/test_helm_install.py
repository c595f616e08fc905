"""`helm install` of the chart onto the real cluster: the operator comes up and serves models."""

import secrets

from _e2e_support import (
    CHART,
    CREDENTIALS_SECRET,
    batmodel,
    create,
    current,
    get,
    image_values,
    is_true,
    predict,
)

from batcomputer_dev.kube_testing import TITANIC_PASSENGER, kubectl_json, wait_for

INSTANCE = "app.kubernetes.io/instance"


def _operator_pods(cluster, release) -> list[dict]:
    pods = kubectl_json(
        cluster, "get", "pods", "-n", release.namespace, "-l", f"{INSTANCE}={release.name}"
    )["items"]
    assert pods, "the chart started no operator pod"
    return pods


def test_every_operator_replica_is_ready_and_runs_hardened(kube_cluster, operator_release):
    namespace = operator_release.namespace
    for pod in _operator_pods(kube_cluster, operator_release):
        assert is_true(pod, "Ready")
        assert pod["spec"]["serviceAccountName"] == operator_release.service_account
        name = pod["metadata"]["name"]
        uid = kube_cluster.kubectl("exec", name, "-n", namespace, "--", "id", "-u").strip()
        assert uid == "10001"
        write = kube_cluster.kubectl(
            *("exec", name, "-n", namespace, "--", "sh", "-c", "touch /opt/written 2>&1; echo $?")
        )
        assert "Read-only file system" in write


def test_install_notes_tell_the_next_commands(operator_release):
    notes = operator_release.install_output
    assert (
        f"kubectl -n {operator_release.namespace} rollout status "
        f"deployment/{operator_release.name}-batcomputer-operator"
    ) in notes
    assert f"kubectl get batmodels -n {operator_release.models_namespace}" in notes
    assert "batcomputer-publish" in notes


def test_published_model_is_reconciled_to_ready_and_answers(
    kube_cluster, operator_release, published_models
):
    namespace = operator_release.models_namespace
    manifest = batmodel("titanic", published_models["titanic-1.0.0"], CREDENTIALS_SECRET)
    create(kube_cluster, manifest, namespace)
    try:
        ready = wait_for(
            lambda: get(kube_cluster, "batmodel", "titanic", namespace),
            lambda obj: current(obj) and is_true(obj, "Ready"),
            "BatModel titanic Ready",
        )
        assert ready["status"]["servingVersion"] == "1.0.0"
        assert ready["status"]["readyReplicas"] == 1
        probabilities = predict(kube_cluster, "titanic", namespace, TITANIC_PASSENGER)
        assert set(probabilities) == {"died", "survived"}
        assert abs(sum(probabilities.values()) - 1.0) < 1e-6
        # A young woman travelling first class: the model has learnt she very likely survived.
        assert probabilities["survived"] > 0.5
    finally:
        # Later modules of the session install a BatModel of the same name here.
        kube_cluster.kubectl("delete", "batmodel", "titanic", "-n", namespace, "--wait=true")


def test_operator_needed_no_permission_it_lacks(kube_cluster, operator_release):
    for pod in _operator_pods(kube_cluster, operator_release):
        logs = kube_cluster.kubectl(
            "logs", pod["metadata"]["name"], "-n", operator_release.namespace
        )
        assert "Forbidden" not in logs
        assert "Not enough permissions" not in logs
        assert "HTTP 403" not in logs


def test_uninstall_removes_the_operator_and_its_rbac(
    helm, kube_cluster, operator_image, server_image
):
    suffix = secrets.token_hex(3)
    release, namespace, watched = f"bc-un-{suffix}", f"bc-un-system-{suffix}", f"bc-un-{suffix}"
    kube_cluster.kubectl("create", "namespace", watched)
    try:
        helm(
            *("install", release, CHART, "--namespace", namespace, "--create-namespace"),
            *image_values(operator_image, server_image),
            *("--set-json", f'watchNamespaces=["{watched}"]', "--wait", "--timeout", "5m"),
            kubeconfig=kube_cluster.kubeconfig,
        )
        selector = f"{INSTANCE}={release}"
        namespaced = "deployments,serviceaccounts,roles,rolebindings"
        assert kubectl_json(kube_cluster, "get", namespaced, "-A", "-l", selector)["items"]

        helm(
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--wait",
            kubeconfig=kube_cluster.kubeconfig,
        )

        assert not kubectl_json(kube_cluster, "get", namespaced, "-A", "-l", selector)["items"]
        cluster_scoped = "clusterroles,clusterrolebindings"
        assert not kubectl_json(kube_cluster, "get", cluster_scoped, "-l", selector)["items"]
        # Helm never deletes CRDs: BatModels (and the models they serve) survive an uninstall.
        assert get(kube_cluster, "crd", "batmodels.batcomputer.io", "default")
    finally:
        kube_cluster.kubectl(
            "delete", "namespace", watched, namespace, "--ignore-not-found", "--wait=false"
        )
