"""A model deployed by the Helm-installed operator, as a cautious admin inspects it live:
credentials only as read-only files in the fetch container, requests and limits on every
container, the restricted Pod Security profile, and the chart's NetworkPolicies in place."""

from __future__ import annotations

import pytest
from _e2e_support import CREDENTIALS_SECRET, batmodel, create, current, get, is_true, predict

from batcomputer_dev.kube_testing import TITANIC_PASSENGER, kubectl_json, wait_for
from batcomputer_dev.pod_security import restricted_violations

NAME = "hardened"
CREDENTIALS_DIR = "/var/run/secrets/batcomputer.io/blob"


@pytest.fixture(scope="module")
def model_pod(kube_cluster, operator_release, published_models, pod_azurite) -> dict:
    namespace = operator_release.models_namespace
    create(
        kube_cluster,
        batmodel(NAME, published_models["titanic-1.0.0"], CREDENTIALS_SECRET),
        namespace,
    )
    wait_for(
        lambda: get(kube_cluster, "batmodel", NAME, namespace),
        lambda obj: current(obj) and is_true(obj, "Ready"),
        f"BatModel {NAME} Ready",
    )
    pods = kubectl_json(
        kube_cluster, "get", "pods", "-n", namespace, "-l", f"batcomputer.io/model={NAME}"
    )
    yield pods["items"][0]
    kube_cluster.kubectl("delete", "batmodel", NAME, "-n", namespace, "--wait=true")


def test_the_model_answers_with_network_policies_in_place(
    kube_cluster, operator_release, model_pod
):
    namespace = operator_release.models_namespace
    policies = kubectl_json(kube_cluster, "get", "networkpolicies", "-n", namespace)
    (policy,) = policies["items"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= model_pod["metadata"]["labels"].items()
    operator_policies = kubectl_json(
        kube_cluster, "get", "networkpolicies", "-n", operator_release.namespace
    )
    assert len(operator_policies["items"]) == 1
    # The local cluster's bridge CNI does not enforce them; the model still answers.
    probabilities = predict(kube_cluster, NAME, namespace, TITANIC_PASSENGER)
    assert set(probabilities) == {"died", "survived"}


def test_credentials_reach_the_fetch_container_only_as_read_only_files(
    kube_cluster, operator_release, model_pod, pod_azurite
):
    (fetch,) = model_pod["spec"]["initContainers"]
    (server,) = model_pod["spec"]["containers"]
    for container in (fetch, server):
        assert not container.get("envFrom")
        assert all("valueFrom" not in env for env in container.get("env") or [])
    assert {"name": "blob-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True} in fetch[
        "volumeMounts"
    ]
    assert all(mount["name"] != "blob-credentials" for mount in server["volumeMounts"])
    namespace = operator_release.models_namespace
    name = model_pod["metadata"]["name"]
    environment = kube_cluster.kubectl("exec", name, "-n", namespace, "-c", "server", "--", "env")
    fetch_log = kube_cluster.kubectl("logs", name, "-n", namespace, "-c", "fetch")
    account_key = pod_azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    assert "fetched titanic 1.0.0" in fetch_log
    for text in (environment, fetch_log):
        assert account_key not in text
        assert "AZURE_STORAGE" not in text


def test_every_container_has_requests_and_a_memory_limit(model_pod):
    for container in model_pod["spec"]["initContainers"] + model_pod["spec"]["containers"]:
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_the_live_pod_meets_the_restricted_profile(model_pod):
    assert restricted_violations(model_pod["spec"]) == []
