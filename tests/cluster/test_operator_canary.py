"""Canary rollouts on the real cluster, under continuous load through the model's Service.

A good version goes through its steps (a share of the pods each, analysed from its pods'
own /metrics) and is promoted with no request failing; a version that cannot meet a
threshold is rolled back, Stalled with reason AnalysisFailed naming the threshold, while
the serving version answers every request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from _operator_support import (
    children,
    condition,
    load_through_service,
    model_namespace,
    running_operator,
    serve,
    settled,
    titanic_releases,
    wait_settled,
)

from batcomputer_dev.kube_testing import find, kubectl_json, patch_spec, wait_for

SECRET = "blob-reader"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


@pytest.fixture(scope="module")
def releases(pod_azurite, trained_bundles, tmp_path_factory) -> dict[str, dict]:
    workdir = tmp_path_factory.mktemp("retrained")
    return titanic_releases(pod_azurite, trained_bundles, workdir, "canary", SECRET)


@pytest.fixture(scope="module")
def namespace(kube_cluster, pod_azurite) -> Iterator[str]:
    with model_namespace(kube_cluster, pod_azurite, SECRET) as name:
        yield name


@pytest.fixture(scope="module")
def operator(kube_cluster, server_image, namespace, tmp_path_factory) -> Iterator[None]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_operator(kube_cluster, namespace, log, "--server-image", server_image):
        yield


@pytest.fixture
def load():
    with contextlib.ExitStack() as stack:
        yield lambda *where: stack.enter_context(load_through_service(*where))


def _steps_seen(cluster, name: str, namespace: str, until, timeout: float) -> list[tuple]:
    """(time, status.rollout.step, verdict, the model's Ingresses) each time they change,
    until `until(model)`."""
    seen: list[tuple] = []
    deadline = time.monotonic() + timeout
    while True:
        model = find(cluster, "batmodel", name, namespace)
        rollout = (model.get("status") or {}).get("rollout") or {}
        ingresses = tuple(
            (i["metadata"]["name"], i["metadata"].get("annotations", {}).get(CANARY_WEIGHT))
            for i in children(cluster, "ingresses", name, namespace)
        )
        state = (rollout.get("step"), rollout.get("verdict"), ingresses)
        if not seen or seen[-1][1:] != state:
            seen.append((time.monotonic(), *state))
        if until(model):
            return seen
        assert time.monotonic() < deadline, f"{name} did not get there: {seen} {model['status']}"
        time.sleep(0.5)


def _share(answers, start: float, end: float, version: str) -> tuple[float, int]:
    during = [answered for at, answered in answers if start <= at < end]
    return (100 * during.count(version) / len(during) if during else 0.0), len(during)


def test_a_good_canary_goes_through_its_steps_and_is_promoted_with_no_failed_request(
    kube_cluster, operator, namespace, releases, load
):
    name = "canary-good"
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 25, "pause": "5s"}, {"weight": 50, "pause": "5s"}],
        "analysis": {"maxErrorRatio": 0.01, "maxP99LatencySeconds": 5, "minRequests": 5},
    }
    # An NGINX Ingress (no controller needs to run for the API server to keep it): the
    # operator adds a canary Ingress with each step's weight.
    ingress = {"path": f"/{name}", "className": "nginx"}
    spec = {**releases["1.0.0"], "replicas": 4, "rollout": rollout, "ingress": ingress}
    serve(kube_cluster, namespace, name, spec)
    columns = kube_cluster.kubectl("get", "bm", name, "-n", namespace).splitlines()
    assert columns[0].split()[5:8] == ["STRATEGY", "STEP", "WEIGHT"]
    traffic = load(kube_cluster, name, namespace)
    started = time.monotonic()
    patch_spec(kube_cluster, name, namespace, releases["1.0.1"])
    seen = _steps_seen(
        kube_cluster,
        name,
        namespace,
        lambda model: settled(model, "Ready") and model["status"].get("servingVersion") == "1.0.1",
        timeout=300,
    )
    promoted = time.monotonic() - started
    time.sleep(2)
    traffic.stop.set()
    print(f"canary promoted after {promoted:.1f} s; steps seen: {seen}")
    print(f"requests: {traffic.predictions} predictions, {len(traffic.answers)} look-ups")
    steps = []  # (when, step) each time the step under analysis changes
    for at, step, verdict, _ in seen:
        if verdict == "Analysing" and step and (not steps or steps[-1][1] != step):
            steps.append((at, step))
    weights = {dict(ingresses).get(f"{name}-canary") for *_, ingresses in seen}
    assert {"25", "50"} <= weights
    for (at, step), following in zip(steps, [*steps[1:], (time.monotonic(), None)], strict=True):
        share, count = _share(traffic.answers, at, following[0], "1.0.1")
        print(f"step {step}: 1.0.1 answered {share:.0f} % of {count} look-ups")
    assert traffic.failures == []
    assert {step for _, step in steps} >= {"1/2", "2/2"}
    assert {version for _, version in traffic.answers} == {"1.0.0", "1.0.1"}
    wait_for(
        lambda: [
            d["metadata"]["name"] for d in children(kube_cluster, "deployments", name, namespace)
        ],
        lambda names: names == [f"{name}-v1-0-1"],
        "the 1.0.0 Deployment to go",
        timeout=60,
    )
    for kind in ("ingresses", "services"):
        names = [item["metadata"]["name"] for item in children(kube_cluster, kind, name, namespace)]
        assert names == [name], kind
    events = kubectl_json(
        kube_cluster,
        *("get", "events", "-n", namespace, "--field-selector"),
        f"involvedObject.kind=BatModel,involvedObject.name={name}",
    )
    reasons = {event["reason"] for event in events["items"]}
    assert {"CanaryStep", "Widened", "Promoting", "Promoted"} <= reasons


def test_a_canary_that_misses_a_threshold_is_rolled_back_while_the_old_version_serves(
    kube_cluster, operator, namespace, releases, load
):
    name = "canary-bad"
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pause": "30s"}],
        # No server answers within 0.1 ms: the candidate cannot meet it.
        "analysis": {"maxP99LatencySeconds": 0.0001, "minRequests": 5},
    }
    serve(kube_cluster, namespace, name, {**releases["1.0.0"], "replicas": 2, "rollout": rollout})
    traffic = load(kube_cluster, name, namespace)
    started = time.monotonic()
    patch_spec(kube_cluster, name, namespace, releases["1.0.1"])
    model = wait_settled(kube_cluster, name, namespace, "Stalled", "AnalysisFailed", timeout=240)
    rolled_back = time.monotonic() - started
    wait_for(
        lambda: {
            d["metadata"]["name"]: d["spec"]["replicas"]
            for d in children(kube_cluster, "deployments", name, namespace)
        },
        lambda replicas: replicas == {f"{name}-v1-0-0": 2},
        "only 1.0.0 left, at 2 replicas",
        timeout=60,
    )
    back = time.monotonic()
    time.sleep(3)
    traffic.stop.set()
    print(f"canary rolled back after {rolled_back:.1f} s")
    print(f"requests: {traffic.predictions} predictions, {len(traffic.answers)} look-ups")
    assert traffic.failures == []
    stalled = condition(model, "Stalled")
    assert "maxP99LatencySeconds" in stalled["message"]
    assert model["status"]["rollout"]["failedThreshold"] == "maxP99LatencySeconds"
    assert model["status"]["rollout"]["verdict"] == "RolledBack"
    assert model["status"]["servingVersion"] == "1.0.0"
    late = {version for at, version in traffic.answers if at > back + 1}
    assert late == {"1.0.0"}
    events = kubectl_json(
        kube_cluster,
        *("get", "events", "-n", namespace),
        f"--field-selector=involvedObject.name={name},reason=AnalysisFailed",
    )["items"]
    assert [event["type"] for event in events] == ["Warning"]
    assert "maxP99LatencySeconds" in events[0]["message"]
