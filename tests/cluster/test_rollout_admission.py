"""spec.rollout at admission: the real API server refuses each field out of its bounds,
naming it, defaults the strategy, and keeps what the operator must refuse itself."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest
from _operator_support import install_crd

GOOD = {
    "apiVersion": "batcomputer.io/v1alpha1",
    "kind": "BatModel",
    "metadata": {"name": "crime"},
    "spec": {
        "version": "1.4.2",
        "source": {"uri": "https://acct.blob.core.windows.net/models/crime/1.4.2"},
        "replicas": 4,
    },
}


def _rollout(rollout) -> dict:
    return {**GOOD, "spec": {**GOOD["spec"], "rollout": rollout}}


def _canary(*steps, **extra) -> dict:
    return _rollout({"strategy": "Canary", "steps": list(steps), **extra})


def _shadow(**fields) -> dict:
    return _rollout({"strategy": "Shadow", **fields})


BAD = [
    ("unknown strategy", _rollout({"strategy": "Linear"}), "spec.rollout.strategy"),
    ("strategy in lower case", _rollout({"strategy": "canary"}), "spec.rollout.strategy"),
    ("weight 0", _canary({"weight": 0}), "spec.rollout.steps.weight"),
    ("weight 100", _canary({"weight": 100}), "spec.rollout.steps.weight"),
    ("weight as text", _canary({"weight": "10%"}), "spec.rollout.steps.weight"),
    ("step without weight", _canary({"pause": "1m"}), "spec.rollout.steps.weight"),
    ("pause in days", _canary({"weight": 10, "pause": "1d"}), "spec.rollout.steps.pause"),
    ("pause as a number", _canary({"weight": 10, "pause": 60}), "spec.rollout.steps.pause"),
    ("fractional pause", _canary({"weight": 10, "pause": "1.5m"}), "spec.rollout.steps.pause"),
    ("no steps", _canary(), "spec.rollout.steps"),
    ("eleven steps", _canary(*({"weight": w} for w in range(1, 12))), "spec.rollout.steps"),
    ("mirror 0 %", _shadow(mirrorPercent=0), "spec.rollout.mirrorPercent"),
    ("mirror 101 %", _shadow(mirrorPercent=101), "spec.rollout.mirrorPercent"),
    ("duration without unit", _shadow(duration="300"), "spec.rollout.duration"),
    ("error ratio above 1", _shadow(analysis={"maxErrorRatio": 2}), "maxErrorRatio"),
    ("negative error ratio", _shadow(analysis={"maxErrorRatio": -0.5}), "maxErrorRatio"),
    ("p99 of 0 s", _shadow(analysis={"maxP99LatencySeconds": 0}), "maxP99LatencySeconds"),
    ("p99 over a minute", _shadow(analysis={"maxP99LatencySeconds": 61}), "maxP99LatencySeconds"),
    ("disagreement above 1", _shadow(analysis={"maxDisagreement": 1.5}), "maxDisagreement"),
    ("negative min requests", _shadow(analysis={"minRequests": -1}), "minRequests"),
    ("min requests as text", _shadow(analysis={"minRequests": "ten"}), "minRequests"),
    ("rollout as a string", _rollout("Canary"), "spec.rollout"),
]

GOOD_ONES = [
    ("blue/green", _rollout({"strategy": "BlueGreen"})),
    (
        "canary with analysis",
        _canary(
            {"weight": 10, "pause": "30s"},
            {"weight": 50, "pause": "5m"},
            analysis={"maxErrorRatio": 0.01, "maxP99LatencySeconds": 0.5, "minRequests": 50},
        ),
    ),
    (
        "shadow with analysis",
        _shadow(
            mirrorPercent=100,
            duration="10m",
            analysis={"maxDisagreement": 0.02, "maxErrorRatio": 0, "minRequests": 0},
        ),
    ),
]


@pytest.fixture(scope="module")
def namespace(kube_cluster):
    install_crd(kube_cluster)
    name = f"bc-rollout-admission-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _dry_run(cluster, namespace: str, manifest: dict) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            cluster.kubectl_binary,
            f"--kubeconfig={cluster.kubeconfig}",
            *("apply", "--dry-run=server", "--validate=false", "-n", namespace),
            *("-o", "json", "-f", "-"),
        ],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("why", "manifest", "field"), BAD, ids=[case[0] for case in BAD])
def test_bad_rollout_is_rejected_naming_the_field(kube_cluster, namespace, why, manifest, field):
    result = _dry_run(kube_cluster, namespace, manifest)
    assert result.returncode != 0, f"accepted although {why}: {result.stdout}"
    assert "is invalid" in result.stderr or "Invalid value" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(("why", "manifest"), GOOD_ONES, ids=[case[0] for case in GOOD_ONES])
def test_good_rollout_is_stored_as_written(kube_cluster, namespace, why, manifest):
    result = _dry_run(kube_cluster, namespace, manifest)
    assert result.returncode == 0, f"{why}: {result.stderr}"
    assert json.loads(result.stdout)["spec"]["rollout"] == manifest["spec"]["rollout"]


def test_strategy_defaults_to_blue_green_and_nothing_else_is_added(kube_cluster, namespace):
    result = _dry_run(kube_cluster, namespace, _rollout({}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["spec"]["rollout"] == {"strategy": "BlueGreen"}
    untouched = json.loads(_dry_run(kube_cluster, namespace, GOOD).stdout)
    assert "rollout" not in untouched["spec"]


def test_combinations_the_schema_cannot_refuse_are_kept_for_the_operator(kube_cluster, namespace):
    # Without CEL (Kubernetes 1.20) a field cannot depend on the strategy; the operator
    # refuses these with InvalidSpec (tests/unit/test_operator_rollout_spec.py).
    for manifest in (_shadow(steps=[{"weight": 10}]), _canary({"weight": 50}, {"weight": 10})):
        result = _dry_run(kube_cluster, namespace, manifest)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["spec"]["rollout"] == manifest["spec"]["rollout"]


def test_kubectl_explain_documents_the_strategies(kube_cluster, namespace):
    explained = kube_cluster.kubectl("explain", "batmodel.spec.rollout")
    for word in ("BlueGreen", "Canary", "Shadow", "Stalled"):
        assert word in explained
