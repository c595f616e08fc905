"""Canary rollouts on the real cluster, under continuous load through the model's Service.

A good version goes through its steps (a share of the pods each, analysed from its pods'
own /metrics) and is promoted with no request failing; a version that cannot meet a
threshold is rolled back, Stalled with reason AnalysisFailed naming the threshold, while
the serving version answers every request; a version that answers errors is rolled back
within one analysis interval of its first error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from _operator_support import (
    SECRET,
    children,
    condition,
    serve,
    settled,
    titanic_releases,
    wait_for_only_version,
    wait_settled,
)
from onnx import TensorProto, helper, numpy_helper

from batcomputer_bundle import bundle
from batcomputer_dev.kube_testing import (
    TITANIC_PASSENGER,
    find,
    kubectl_json,
    patch_spec,
    publish,
    wait_for,
)
from batcomputer_dev.pytest_bundles import train_bundle
from batcomputer_operator.analysed import ANALYSIS_INTERVAL_SECONDS

CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
# The failing release fails for passengers older than this; its self-check rows and its
# example are all younger, so it loads, passes its checks and becomes Ready.
FAILING_ABOVE_AGE = 60.0
OLDER_PASSENGER = {**TITANIC_PASSENGER, "age": 70}


@pytest.fixture(scope="module")
def releases(pod_azurite, trained_bundles, tmp_path_factory) -> dict[str, dict]:
    workdir = tmp_path_factory.mktemp("retrained")
    return titanic_releases(pod_azurite, trained_bundles, workdir, "canary", SECRET)


@pytest.fixture(scope="module")
def failing_release(pod_azurite, tmp_path_factory) -> dict:
    """titanic 1.0.2, whose model answers younger passengers and fails at run time for
    older ones, published as `batcomputer-publish` prints it."""
    folder = train_bundle("titanic", "1.0.2", tmp_path_factory.mktemp("failing"))
    _fail_for_passengers_older_than(folder, FAILING_ABOVE_AGE)
    spec = publish(pod_azurite, pod_azurite.make_container("canary-failing"), folder)["spec"]
    spec["source"]["credentialsSecret"] = SECRET
    return spec


def _fail_for_passengers_older_than(folder: Path, age: float) -> None:
    """Rewrite the bundle's model.onnx so that a row whose age is above `age` fails in
    onnxruntime (a Gather out of bounds), then its bundle.json to match: the bundle stays
    verified, and the model agrees with scikit-learn on every row it is checked with."""
    manifest = json.loads((folder / bundle.MANIFEST_FILE).read_text())
    age_column = [feature["name"] for feature in manifest["features"]].index("age")
    assert max(row[age_column] for row in manifest["self_check"]["rows"]) < age
    model = onnx.load(folder / "model.onnx")
    graph = model.graph
    (features,) = graph.input
    (probabilities,) = (output for output in graph.output if output.name == "probabilities")
    for node in graph.node:
        node.output[:] = ["scored" if out == "probabilities" else out for out in node.output]
    as_input = helper.tensor_dtype_to_np_dtype(features.type.tensor_type.elem_type)
    as_output = helper.tensor_dtype_to_np_dtype(probabilities.type.tensor_type.elem_type)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([age_column], dtype=np.int64), "age_column"),
            numpy_helper.from_array(np.array(age, dtype=as_input), "age_limit"),
            numpy_helper.from_array(np.zeros(1, dtype=as_output), "one_zero"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Gather", [features.name, "age_column"], ["age"], axis=1),
            helper.make_node("Greater", ["age", "age_limit"], ["older"]),
            helper.make_node("Cast", ["older"], ["slot"], to=TensorProto.INT64),
            # Slot 1, an older passenger's, is beyond the one-element tensor.
            helper.make_node("Gather", ["one_zero", "slot"], ["zero"], axis=0),
            helper.make_node("Add", ["scored", "zero"], ["probabilities"]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    manifest["files"] = bundle.describe_files(folder, list(manifest["files"]))
    bundle.write_manifest(folder, manifest)
    bundle.verify_folder(folder)


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
    wait_for_only_version(kube_cluster, name, namespace, "1.0.1")
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


@pytest.mark.usefixtures("operator")
def test_a_canary_answering_errors_is_rolled_back_within_one_analysis_interval(
    kube_cluster, namespace, releases, failing_release, load
):
    name = "canary-errors"
    rollout = {
        "strategy": "Canary",
        # A step far longer than the test: only the analysis can end it.
        "steps": [{"weight": 50, "pause": "10m"}],
        # From its first answer on, each pass has the evidence it needs: the first error
        # fails the ratio at the next pass.
        "analysis": {"maxErrorRatio": 0.05, "minRequests": 1},
    }
    serve(kube_cluster, namespace, name, {**releases["1.0.0"], "replicas": 2, "rollout": rollout})
    younger = load(kube_cluster, name, namespace)
    older = load(kube_cluster, name, namespace, OLDER_PASSENGER)
    patch_spec(kube_cluster, name, namespace, failing_release)
    model = wait_settled(kube_cluster, name, namespace, "Stalled", "AnalysisFailed", timeout=240)
    verdict = time.monotonic()
    wait_for_only_version(kube_cluster, name, namespace, "1.0.0")
    back = time.monotonic()
    time.sleep(3)
    for traffic in (younger, older):
        traffic.stop.set()
    errors = [at for at, _ in older.failures]
    assert errors, "no older passenger was ever sent to 1.0.2"
    first_error = min(errors)
    print(
        f"first error answered by 1.0.2 to rollback verdict: {verdict - first_error:.1f} s; "
        f"last error {max(errors) - first_error:.1f} s after the first; "
        f"{len(errors)} of {older.predictions + len(errors)} older passengers failed; "
        f"younger: {younger.predictions} predictions, {len(younger.failures)} failed"
    )
    # The verdict's pass comes within one interval of the first error; the rest of the
    # allowance is the scrape, the status write and this test's polling.
    assert verdict - first_error <= ANALYSIS_INTERVAL_SECONDS + 3
    assert younger.failures == []
    assert {error for _, error in older.failures} == {"HTTP Error 500: Internal Server Error"}
    assert max(errors) < back
    assert {version for at, version in older.answers if at > back} == {"1.0.0"}
    assert model["status"]["rollout"]["failedThreshold"] == "maxErrorRatio"
    assert model["status"]["rollout"]["verdict"] == "RolledBack"
    assert "maxErrorRatio" in condition(model, "Stalled")["message"]
    assert model["status"]["servingVersion"] == "1.0.0"
