"""The operator against the real cluster: real server pods fetch real bundles from Azurite.

The operator runs as its console script (`batcomputer-operator`) on the test
host with the cluster's kubeconfig, watching one fresh namespace. Predictions go
through the model's Service ClusterIP, which kube-proxy makes reachable from the host.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from _operator_support import (
    SECRET,
    children,
    condition,
    create_batmodel,
    model_namespace,
    running_operator,
    settled,
    titanic_releases,
    wait_for_only_version,
)

from batcomputer_dev.kube_testing import (
    TITANIC_PASSENGER,
    call_service,
    find,
    kubectl_json,
    patch_spec,
    wait_for,
)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def releases(pod_azurite, trained_bundles, tmp_path_factory) -> dict[str, dict]:
    workdir = tmp_path_factory.mktemp("retrained")
    return titanic_releases(pod_azurite, trained_bundles, workdir, "operator", SECRET)


def _model(cluster, name: str, namespace: str) -> dict | None:
    return find(cluster, "batmodel", name, namespace)


def _wait(cluster, name, namespace, kind="Ready", reason=None, *, timeout=180.0) -> dict:
    return wait_for(
        lambda: _model(cluster, name, namespace),
        lambda model: settled(model, kind, reason),
        f"{kind}{'/' + reason if reason else ''} on BatModel {name}",
        timeout=timeout,
    )


def _info(cluster, name: str, namespace: str) -> dict:
    return call_service(cluster, name, namespace, "/api/info")


def _endpoint_versions(cluster, name: str, namespace: str) -> list[str]:
    """The versions of the pods the Service's EndpointSlices list as ready, one per
    endpoint (kube-proxy programs the ClusterIP from the slices)."""
    slices = kubectl_json(
        cluster,
        "get",
        "endpointslices",
        "-n",
        namespace,
        "-l",
        f"kubernetes.io/service-name={name}",
    )
    versions = {
        p["metadata"]["uid"]: p["metadata"]["labels"]["batcomputer.io/version"]
        for p in children(cluster, "pods", name, namespace)
    }
    return sorted(
        versions.get(endpoint["targetRef"]["uid"], "a pod that is gone")
        for endpoint_slice in slices["items"]
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
    )


def _ready_and_routed(cluster, name: str, namespace: str, version: str) -> None:
    """What Ready promises, checked at once: the Service's EndpointSlices list `version`'s
    pods, and no other version's. Then the first answer through the ClusterIP: this host's
    kube-proxy programs it from the slices on its own schedule, at most once per
    iptables min-sync-period (1 s), so while other Services churn a request can still be
    refused, or reach the draining old version, for up to a second after Ready."""
    listed = _endpoint_versions(cluster, name, namespace)
    assert listed and set(listed) == {version}, listed
    wait_for(
        lambda: _answer(cluster, name, namespace),
        lambda answered: answered == version,
        f"{name}'s ClusterIP to answer with {version}",
        timeout=10,
    )


def _answer(cluster, name: str, namespace: str) -> str | None:
    try:
        return _info(cluster, name, namespace)["version"]
    except (urllib.error.URLError, ConnectionError):
        return None


def _serve(cluster, namespace: str, name: str, spec: dict) -> tuple[dict, float]:
    """Create a BatModel; return it once Ready and answering, and the time to Ready."""
    started = time.monotonic()
    create_batmodel(cluster, namespace, name, spec)
    model = _wait(cluster, name, namespace)
    to_ready = time.monotonic() - started
    _ready_and_routed(cluster, name, namespace, spec["version"])
    return model, to_ready


def test_apply_serves_then_a_bump_switches_blue_green(kube_cluster, operator, namespace, releases):
    name = "bluegreen"
    model, to_ready = _serve(kube_cluster, namespace, name, releases["1.0.0"])
    print(f"apply-to-Ready: {to_ready:.1f} s")
    status = model["status"]
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert (status["desiredVersion"], status["servingVersion"]) == ("1.0.0", "1.0.0")
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert status["url"] == f"http://{name}.{namespace}.svc/api"
    assert condition(model, "Stalled")["status"] == "False"
    assert condition(model, "Reconciling")["status"] == "False"
    probabilities = call_service(
        kube_cluster, name, namespace, "/api/predict", body=TITANIC_PASSENGER
    )
    assert probabilities and abs(sum(probabilities.values()) - 1) < 1e-6
    assert _info(kube_cluster, name, namespace)["version"] == "1.0.0"
    columns = kube_cluster.kubectl("get", "bm", name, "-n", namespace).splitlines()
    assert columns[0].split() == [
        *("NAME", "VERSION", "SERVING", "READY", "URL", "STRATEGY", "STEP", "WEIGHT", "AGE")
    ]
    # No spec.rollout and no rollout under way: STRATEGY, STEP and WEIGHT are blank.
    assert columns[1].split()[:5] == [name, "1.0.0", "1.0.0", "True", status["url"]]
    assert len(columns[1].split()) == 6  # the age follows at once

    started = time.monotonic()
    patch_spec(kube_cluster, name, namespace, releases["1.0.1"])
    answered = []
    while not settled(_model(kube_cluster, name, namespace), "Ready"):
        # Blue/green: every request during the rollout is answered, by one version or the other.
        answered.append(_info(kube_cluster, name, namespace)["version"])
        assert time.monotonic() - started < 180, "version 1.0.1 never became Ready"
    switch = time.monotonic() - started
    print(f"version switch: {switch:.1f} s")
    assert answered and set(answered) <= {"1.0.0", "1.0.1"}
    assert answered == sorted(answered)  # never back to the old version after the switch
    assert answered[0] == "1.0.0"
    _ready_and_routed(kube_cluster, name, namespace, "1.0.1")
    model = _model(kube_cluster, name, namespace)
    assert model["status"]["servingVersion"] == "1.0.1"
    wait_for_only_version(kube_cluster, name, namespace, "1.0.1")
    events = kubectl_json(
        kube_cluster,
        *("get", "events", "-n", namespace, "--field-selector"),
        f"involvedObject.kind=BatModel,involvedObject.name={name}",
    )
    reasons = {event["reason"] for event in events["items"]}
    assert {"Deploying", "ServiceCreated", "Switched", "Retired", "Ready"} <= reasons


def test_a_bad_version_stalls_while_the_old_one_serves_and_revert_recovers(
    kube_cluster, operator, namespace, releases
):
    name = "stall"
    good = releases["1.0.0"]
    _serve(kube_cluster, namespace, name, good)

    missing = {**good, "version": "1.0.2"}
    missing["source"] = {**good["source"], "uri": good["source"]["uri"].replace("1.0.0", "1.0.2")}
    patch_spec(kube_cluster, name, namespace, missing)
    model = _wait(kube_cluster, name, namespace, "Stalled", "BlobNotFound", timeout=120)
    assert "not found" in condition(model, "Stalled")["message"]
    assert condition(model, "Ready")["status"] == "False"
    assert model["status"]["servingVersion"] == "1.0.0"
    assert _info(kube_cluster, name, namespace)["version"] == "1.0.0"

    mismatch = {**releases["1.0.1"]}
    mismatch["source"] = {**mismatch["source"], "sha256": {"model.pkl": "0" * 64}}
    patch_spec(kube_cluster, name, namespace, mismatch)
    model = _wait(kube_cluster, name, namespace, "Stalled", "DigestMismatch", timeout=120)
    assert "model.pkl" in condition(model, "Stalled")["message"]
    assert model["status"]["servingVersion"] == "1.0.0"
    assert _info(kube_cluster, name, namespace)["version"] == "1.0.0"
    deployments = {
        d["metadata"]["name"] for d in children(kube_cluster, "deployments", name, namespace)
    }
    assert f"{name}-v1-0-2" not in deployments  # an abandoned failing version is cleaned up

    started = time.monotonic()
    patch_spec(
        kube_cluster, name, namespace, {**good, "source": {**good["source"], "sha256": None}}
    )
    model = _wait(kube_cluster, name, namespace, timeout=60)
    print(f"revert to Ready: {time.monotonic() - started:.1f} s")
    assert condition(model, "Stalled")["status"] == "False"
    assert _info(kube_cluster, name, namespace)["version"] == "1.0.0"

    # A mistyped pin key reaches the operator (the schema keeps it), which refuses the
    # spec rather than fetch model.pkl unpinned, and touches no Deployment for it.
    before = wait_for(
        lambda: _deployment_states(kube_cluster, name, namespace),
        lambda states: list(states) == [f"{name}-v1-0-0"],
        "only the 1.0.0 Deployment to remain",
        timeout=60,
    )
    typo = {**releases["1.0.1"]}
    typo["source"] = {**typo["source"], "sha256": {"modle.pkl": "ab" * 32}}
    stored = patch_spec(kube_cluster, name, namespace, typo)
    assert set(stored["spec"]["source"]["sha256"]) == {"modle.pkl"}
    model = _wait(kube_cluster, name, namespace, "Stalled", "InvalidSpec", timeout=60)
    assert condition(model, "Stalled")["message"] == (
        "spec.source.sha256: unknown file 'modle.pkl'; allowed: model.pkl, lookup.pkl, flags.pkl"
    )
    assert condition(model, "Ready")["status"] == "False"
    assert model["status"]["servingVersion"] == "1.0.0"
    assert _deployment_states(kube_cluster, name, namespace) == before
    assert _info(kube_cluster, name, namespace)["version"] == "1.0.0"


def test_fixing_a_stalled_version_in_place_never_blames_the_new_pods_for_the_old_ones(
    kube_cluster, operator, namespace, releases
):
    # Same version, new pod template: the Deployment keeps its name and the crash-looping
    # pod of the old template lingers while the new one starts. Status for the new
    # generation must not call it Stalled on the old pod's word (kstatus tools stop there).
    name = "creds"
    anonymous = {**releases["1.0.0"]}
    anonymous["source"] = {
        key: value for key, value in anonymous["source"].items() if key != "credentialsSecret"
    }
    create_batmodel(kube_cluster, namespace, name, anonymous)
    model = _wait(kube_cluster, name, namespace, "Stalled", "AuthenticationFailed", timeout=120)
    assert "no credentials given" in condition(model, "Stalled")["message"]

    fixed = patch_spec(kube_cluster, name, namespace, {"source": {"credentialsSecret": SECRET}})
    generation = fixed["metadata"]["generation"]
    seen = []
    started = time.monotonic()
    while not settled(model, "Ready"):
        assert time.monotonic() - started < 180, f"never Ready; statuses seen: {seen}"
        time.sleep(0.15)
        model = _model(kube_cluster, name, namespace)
        if model["status"].get("observedGeneration") != generation:
            continue
        stalled = condition(model, "Stalled")
        assert stalled["status"] != "True", f"Stalled for the fixed spec: {stalled['message']}"
        seen.append(condition(model, "Reconciling")["reason"])
    print(f"fix to Ready: {time.monotonic() - started:.1f} s, statuses seen: {seen}")
    assert "RollingOut" in seen  # the rollout was watched, not only its end
    _ready_and_routed(kube_cluster, name, namespace, "1.0.0")
    assert [
        d["metadata"]["name"] for d in children(kube_cluster, "deployments", name, namespace)
    ] == [f"{name}-v1-0-0"]
    probabilities = call_service(
        kube_cluster, name, namespace, "/api/predict", body=TITANIC_PASSENGER
    )
    assert probabilities and abs(sum(probabilities.values()) - 1) < 1e-6


def _deployment_states(cluster, name: str, namespace: str) -> dict[str, tuple[str, int]]:
    return {
        d["metadata"]["name"]: (d["metadata"]["uid"], d["metadata"]["generation"])
        for d in children(cluster, "deployments", name, namespace)
    }


def test_replicas_scale_the_serving_deployment_in_place(
    kube_cluster, operator, namespace, releases
):
    name = "scale"
    _serve(kube_cluster, namespace, name, releases["1.0.0"])
    (before,) = children(kube_cluster, "deployments", name, namespace)

    patch_spec(kube_cluster, name, namespace, {"replicas": 2})
    model = _wait(kube_cluster, name, namespace)
    assert (model["status"]["replicas"], model["status"]["readyReplicas"]) == (2, 2)
    assert _endpoint_versions(kube_cluster, name, namespace) == ["1.0.0", "1.0.0"]
    (after,) = children(kube_cluster, "deployments", name, namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["replicas"] == 2

    patch_spec(kube_cluster, name, namespace, {"replicas": 0})
    model = _wait(kube_cluster, name, namespace, "Ready", "Stopped")
    assert "servingVersion" not in model["status"]
    (stopped,) = children(kube_cluster, "deployments", name, namespace)
    assert stopped["metadata"]["uid"] == before["metadata"]["uid"]
    assert stopped["spec"]["replicas"] == 0


def test_a_spec_the_api_server_refuses_stalls_with_its_words(
    kube_cluster, operator, namespace, releases
):
    name = "refused"
    greedy = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}  # schema-valid, not pod-valid
    create_batmodel(kube_cluster, namespace, name, {**releases["1.0.0"], "resources": greedy})
    model = _wait(kube_cluster, name, namespace, "Stalled", "Invalid", timeout=60)
    assert "limit" in condition(model, "Stalled")["message"]
    assert children(kube_cluster, "deployments", name, namespace) == []

    patch_spec(kube_cluster, name, namespace, {"resources": {"requests": {"cpu": "100m"}}})
    model = _wait(kube_cluster, name, namespace)
    assert model["status"]["servingVersion"] == "1.0.0"


def test_a_name_another_controller_owns_is_never_taken_over(
    kube_cluster, operator, namespace, releases
):
    name = "taken"
    owner = kubectl_json(
        kube_cluster, "create", "configmap", f"{name}-owner", "-n", namespace, "--from-literal=a=b"
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"selector": {"app": "someone-else"}, "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    kube_cluster.kubectl("create", "-f", "-", input_text=yaml.safe_dump(service))
    create_batmodel(kube_cluster, namespace, name, releases["1.0.0"])
    model = _wait(kube_cluster, name, namespace, "Stalled", "NameConflict", timeout=60)
    assert f"Service {name}" in condition(model, "Stalled")["message"]
    assert find(kube_cluster, "service", name, namespace)["spec"]["selector"] == {
        "app": "someone-else"
    }
    assert children(kube_cluster, "deployments", name, namespace) == []


def _resource_versions(cluster, name: str, namespace: str) -> dict[str, str]:
    objects = [
        _model(cluster, name, namespace),
        find(cluster, "service", name, namespace),
        *children(cluster, "deployments", name, namespace),
    ]
    return {
        o["kind"] + "/" + o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in objects
    }


def test_hand_edits_are_repaired_and_an_idle_model_is_quiet(
    kube_cluster, operator, namespace, releases
):
    name = "drift"
    _serve(kube_cluster, namespace, name, releases["1.0.0"])
    deployment = f"{name}-v1-0-0"

    quiet = _resource_versions(kube_cluster, name, namespace)
    time.sleep(5)
    assert _resource_versions(kube_cluster, name, namespace) == quiet

    old_uid = find(kube_cluster, "service", name, namespace)["metadata"]["uid"]
    kube_cluster.kubectl("delete", "service", name, "-n", namespace)
    service = wait_for(
        lambda: find(kube_cluster, "service", name, namespace),
        lambda svc: svc is not None and svc["metadata"]["uid"] != old_uid,
        "the deleted Service to come back",
        timeout=60,
    )
    assert service["spec"]["selector"]["batcomputer.io/version"] == "1.0.0"

    kube_cluster.kubectl(
        *("patch", "service", name, "-n", namespace, "--type", "merge"),
        *("-p", '{"spec": {"selector": {"batcomputer.io/version": "6.6.6"}}}'),
    )
    wait_for(
        lambda: find(kube_cluster, "service", name, namespace)["spec"]["selector"],
        lambda selector: selector["batcomputer.io/version"] == "1.0.0",
        "the Service selector to be restored",
        timeout=60,
    )

    kube_cluster.kubectl("scale", "deployment", deployment, "-n", namespace, "--replicas=3")
    kube_cluster.kubectl(
        "set", "image", f"deployment/{deployment}", "-n", namespace, "server=evil:latest"
    )
    restored = wait_for(
        lambda: find(kube_cluster, "deployment", deployment, namespace),
        lambda d: (
            d["spec"]["replicas"] == 1
            and d["spec"]["template"]["spec"]["containers"][0]["image"] != "evil:latest"
        ),
        "the Deployment to be restored",
        timeout=60,
    )
    assert restored["metadata"]["ownerReferences"][0]["kind"] == "BatModel"
    model = _wait(kube_cluster, name, namespace)
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    _ready_and_routed(kube_cluster, name, namespace, "1.0.0")  # a new ClusterIP, too
    assert _info(kube_cluster, name, namespace)["version"] == "1.0.0"


def test_deleting_the_batmodel_removes_its_children(kube_cluster, operator, namespace, releases):
    name = "gone"
    _serve(kube_cluster, namespace, name, {**releases["1.0.0"], "ingress": {"path": "/gone"}})
    assert find(kube_cluster, "ingress", name, namespace) is not None
    kube_cluster.kubectl("delete", "batmodel", name, "-n", namespace)
    for kind in ("deployments", "services", "ingresses", "pods"):
        wait_for(
            lambda kind=kind: children(kube_cluster, kind, name, namespace),
            lambda found: found == [],
            f"{kind} of {name} to be garbage-collected",
            timeout=120,
        )


def test_a_server_that_never_gets_ready_stalls_at_the_progress_deadline(
    kube_cluster, server_image, pod_azurite, trained_bundles, tmp_path
):
    # A bundle whose recorded self-check disagrees with its model: the fetch passes
    # (every file matches its digest), the server runs, and /readyz stays 503.
    bundle = tmp_path / "titanic" / "1.0.0"
    shutil.copytree(trained_bundles.titanic, bundle)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["self_check"]["probabilities"] = [
        list(reversed(row)) for row in manifest["self_check"]["probabilities"]
    ]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    container = pod_azurite.make_container("unready")
    pod_azurite.upload_folder(bundle, container, "titanic/1.0.0")
    spec = {
        "version": "1.0.0",
        "source": {
            "uri": pod_azurite.folder_uri(container, "titanic/1.0.0"),
            "credentialsSecret": SECRET,
        },
    }
    flags = ("--server-image", server_image, "--progress-deadline-seconds", "20")
    with (
        model_namespace(kube_cluster, pod_azurite, SECRET) as namespace,
        running_operator(kube_cluster, namespace, tmp_path / "operator.log", *flags),
    ):
        create_batmodel(kube_cluster, namespace, "unready", spec)
        model = _wait(
            kube_cluster, "unready", namespace, "Stalled", "ProgressDeadlineExceeded", timeout=120
        )
        message = condition(model, "Stalled")["message"]
        assert "runs but never became ready: its /readyz says why" in message
        assert condition(model, "Ready")["status"] == "False"
        assert "servingVersion" not in model["status"]


def test_a_restarted_operator_picks_up_where_the_cluster_is(
    kube_cluster, server_image, pod_azurite, releases, tmp_path
):
    # All rollout state lives in the cluster (Deployments, the Service selector), so an
    # operator that was down while the spec changed simply carries on.
    flags = ("--server-image", server_image)
    with model_namespace(kube_cluster, pod_azurite, SECRET) as namespace:
        with running_operator(kube_cluster, namespace, tmp_path / "first.log", *flags):
            _serve(kube_cluster, namespace, "restart", releases["1.0.0"])
        lagging = patch_spec(kube_cluster, "restart", namespace, releases["1.0.1"])
        assert lagging["status"]["observedGeneration"] < lagging["metadata"]["generation"]
        assert _info(kube_cluster, "restart", namespace)["version"] == "1.0.0"
        with running_operator(kube_cluster, namespace, tmp_path / "second.log", *flags):
            model = _wait(kube_cluster, "restart", namespace)
            assert model["status"]["servingVersion"] == "1.0.1"
            _ready_and_routed(kube_cluster, "restart", namespace, "1.0.1")
