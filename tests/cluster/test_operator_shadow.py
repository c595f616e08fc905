"""Shadow rollouts on the real cluster, under continuous load through the model's Service.

The serving version copies the predictions it answered to the candidate's own Service,
told where by its shadow settings ConfigMap, and compares the answers. A candidate whose
probabilities differ beyond maxDisagreement is rolled back having answered no caller;
one that agrees is promoted after the duration with no request failing. Either way the
copying stops and no ConfigMap is left naming a URL.
"""

from __future__ import annotations

import json
import time

import pytest
from _operator_support import (
    SECRET,
    children,
    condition,
    serve,
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
    publish,
    wait_for,
)
from batcomputer_dev.pytest_bundles import train_bundle
from batcomputer_operator.scrape import ScrapeError, scrape

# The kubelet brings a ConfigMap's change to the pods on its sync period (about a
# minute), after the candidate's pods are up: the analysis starts that much later.
VERDICT_TIMEOUT = 360


@pytest.fixture(scope="module")
def releases(pod_azurite, trained_bundles, tmp_path_factory) -> dict[str, dict]:
    """1.0.0, 1.0.1 retrained alike (the same probabilities), and 1.1.0, a logistic
    regression whose probabilities differ (by about 0.03 for the passenger the load sends)."""
    workdir = tmp_path_factory.mktemp("retrained")
    specs = titanic_releases(pod_azurite, trained_bundles, workdir, "shadow", SECRET)
    other = train_bundle("titanic", "1.1.0", workdir, "--estimator", "LogisticRegression")
    spec = publish(pod_azurite, pod_azurite.make_container("shadow-other"), other)["spec"]
    spec["source"]["credentialsSecret"] = SECRET
    return {**specs, "1.1.0": spec}


def _rollout(max_disagreement: float) -> dict:
    return {
        "strategy": "Shadow",
        "mirrorPercent": 100,
        "duration": "20s",
        "analysis": {
            "maxDisagreement": max_disagreement,
            "maxErrorRatio": 0.05,
            "maxP99LatencySeconds": 5,
            "minRequests": 5,
        },
    }


def _version_pods(cluster, name: str, namespace: str, version: str) -> list[str]:
    pods = kubectl_json(
        cluster,
        *("get", "pods", "-n", namespace, "-l"),
        f"batcomputer.io/model={name},batcomputer.io/version={version}",
    )["items"]
    return [p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP")]


def _counted(ips: list[str], sample: str, **labels: str) -> float | None:
    """The sum of `sample` over the pods at `ips`; None when a pod cannot be read."""
    total = 0.0
    for ip in ips:
        try:
            total += scrape(ip).total(sample, **labels)
        except ScrapeError:
            return None
    return total


def _copies(cluster, name: str, namespace: str, serving: str, candidate: str) -> tuple:
    """(predictions the candidate's pods answered, copies the serving pods sent and saw
    answered or fail), read in that order: every prediction the candidate answered by the
    first reading is among the copies of the second, if it answered copies only."""
    answered = _counted(
        _version_pods(cluster, name, namespace, candidate),
        "batcomputer_http_requests_total",
        route="/api/predict",
    )
    time.sleep(0.5)  # the serving pod counts a copy once the candidate's answer is back
    serving_pods = _version_pods(cluster, name, namespace, serving)
    sent = _counted(serving_pods, "batcomputer_shadow_requests_total", outcome="compared")
    failed = _counted(serving_pods, "batcomputer_shadow_requests_total", outcome="error")
    if answered is None or sent is None or failed is None:
        return None, None
    return answered, sent + failed


def _shadow_settings(cluster, name: str, namespace: str) -> dict[str, dict]:
    return {
        c["metadata"]["name"]: json.loads(c["data"]["settings.json"])
        for c in children(cluster, "configmaps", name, namespace)
    }


def _events(cluster, namespace: str, name: str, reason: str) -> list[dict]:
    return kubectl_json(
        cluster,
        *("get", "events", "-n", namespace),
        f"--field-selector=involvedObject.name={name},reason={reason}",
    )["items"]


def test_a_disagreeing_version_is_rolled_back_having_answered_no_caller(
    kube_cluster, operator, namespace, releases, load
):
    name = "shadow-disagrees"
    spec = {**releases["1.0.0"], "replicas": 2, "rollout": _rollout(0.01)}
    serve(kube_cluster, namespace, name, spec)
    served = json.dumps(
        call_service(kube_cluster, name, namespace, "/api/predict", body=TITANIC_PASSENGER),
        sort_keys=True,
    )
    traffic = load(kube_cluster, name, namespace)
    started = time.monotonic()
    patch_spec(kube_cluster, name, namespace, releases["1.1.0"])
    copies: tuple = (None, None)
    seen = set()
    deadline = time.monotonic() + VERDICT_TIMEOUT
    while True:
        model = find(kube_cluster, "batmodel", name, namespace)
        if settled(model, "Stalled", "AnalysisFailed"):
            break
        rollout = (model.get("status") or {}).get("rollout") or {}
        seen.add((rollout.get("strategy"), rollout.get("step"), rollout.get("verdict")))
        if rollout.get("verdict") == "Analysing":
            read = _copies(kube_cluster, name, namespace, "1.0.0", "1.1.0")
            copies = read if read[0] is not None else copies
        assert time.monotonic() < deadline, f"no verdict: {model.get('status')}"
        time.sleep(1)
    rolled_back = time.monotonic() - started
    wait_for_only_version(kube_cluster, name, namespace, "1.0.0")
    services = [s["metadata"]["name"] for s in children(kube_cluster, "services", name, namespace)]
    settings = _shadow_settings(kube_cluster, name, namespace)
    time.sleep(2)
    traffic.stop.set()
    answered, sent = copies
    print(f"shadow rolled back after {rolled_back:.1f} s; states seen: {sorted(map(str, seen))}")
    print(
        f"requests: {traffic.predictions} predictions, {len(traffic.answers)} look-ups, "
        f"{len(traffic.failures)} failed; candidate answered {answered} predictions, "
        f"the serving pods sent {sent} copies"
    )
    assert traffic.failures == []
    # Every caller got 1.0.0's answer, never 1.1.0's, which differs.
    assert {version for _, version in traffic.answers} == {"1.0.0"}
    assert set(traffic.predicted) == {served}
    # The candidate answered nothing but copies (that it was sent some, the verdict shows:
    # maxDisagreement is measured on compared copies only). The last reading during the
    # analysis may predate its first answer when the verdict comes at once.
    assert answered is not None and answered <= sent
    assert ("Shadow", "shadow", "Analysing") in seen
    stalled = condition(model, "Stalled")
    assert "maxDisagreement" in stalled["message"]
    assert model["status"]["rollout"]["failedThreshold"] == "maxDisagreement"
    assert model["status"]["rollout"]["verdict"] == "RolledBack"
    assert model["status"]["servingVersion"] == "1.0.0"
    assert services == [name]
    assert settings == {f"{name}-v1-0-0-shadow": {}}
    events = _events(kube_cluster, namespace, name, "AnalysisFailed")
    assert [event["type"] for event in events] == ["Warning"]
    assert "maxDisagreement" in events[0]["message"]


def test_an_agreeing_version_is_promoted_after_the_duration_with_no_failed_request(
    kube_cluster, operator, namespace, releases, load
):
    name = "shadow-agrees"
    spec = {**releases["1.0.0"], "replicas": 2, "rollout": _rollout(0.01)}
    serve(kube_cluster, namespace, name, spec)
    traffic = load(kube_cluster, name, namespace)
    started = time.monotonic()
    patch_spec(kube_cluster, name, namespace, releases["1.0.1"])
    copying: dict = {}
    candidate: dict | None = None
    shown = ""
    analysing_until = started
    deadline = time.monotonic() + VERDICT_TIMEOUT
    while True:
        model = find(kube_cluster, "batmodel", name, namespace)
        if settled(model, "Ready") and model["status"]["servingVersion"] == "1.0.1":
            break
        if ((model.get("status") or {}).get("rollout") or {}).get("verdict") == "Analysing":
            analysing_until = time.monotonic()
            if not copying:
                copying = {
                    key: value
                    for key, value in _shadow_settings(kube_cluster, name, namespace).items()
                    if value
                }
                candidate = find(kube_cluster, "service", f"{name}-v1-0-1", namespace)
            shown = shown or kube_cluster.kubectl("get", "bm", name, "-n", namespace)
        assert time.monotonic() < deadline, f"not promoted: {model.get('status')}"
        time.sleep(1)
    promoted = time.monotonic() - started
    wait_for_only_version(kube_cluster, name, namespace, "1.0.1")
    leftovers = wait_for(
        lambda: (
            [s["metadata"]["name"] for s in children(kube_cluster, "services", name, namespace)],
            _shadow_settings(kube_cluster, name, namespace),
        ),
        lambda found: found == ([name], {}),
        "the candidate's Service and the shadow settings to go",
        timeout=60,
    )
    time.sleep(2)
    traffic.stop.set()
    print(f"shadow promoted after {promoted:.1f} s")
    print(
        f"requests: {traffic.predictions} predictions, {len(traffic.answers)} look-ups, "
        f"{len(traffic.failures)} failed"
    )
    assert traffic.failures == []
    # The serving version's settings name the candidate's own Service, by its address.
    assert candidate is not None
    assert copying == {
        f"{name}-v1-0-0-shadow": {
            "url": f"http://{candidate['spec']['clusterIP']}:80",
            "percent": 100,
        }
    }
    header, row = (line.split() for line in shown.splitlines()[:2])
    assert "STRATEGY" in header and {"Shadow", "shadow"} <= set(row), shown
    assert model["status"].get("rollout") is None
    assert leftovers == ([name], {})
    # While it was analysed, 1.0.1 answered no look-up; then it took over.
    during = {version for at, version in traffic.answers if at <= analysing_until}
    assert during == {"1.0.0"}
    assert traffic.answers[-1][1] == "1.0.1"
    assert [e["type"] for e in _events(kube_cluster, namespace, name, "Promoted")] == ["Normal"]
