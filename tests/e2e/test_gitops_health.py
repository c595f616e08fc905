"""Live BatModel statuses through a model's life, judged by Argo CD's Lua and by kstatus.

Each state is captured from the real API server: right after create (no status
yet), Ready, right after a spec change (status one generation behind), rolling
out, Ready on the new version, Stalled on a version that cannot start, and
recovered after the revert. With BATCOMPUTER_CAPTURE_STATUSES_TO=<dir> the
captured objects are also written there as JSON (tests/data/batmodel-statuses/
holds such a capture for the unit tests).
"""

import json
import os
from pathlib import Path

import pytest
from _e2e_support import (
    CREDENTIALS_SECRET,
    batmodel,
    create,
    current,
    get,
    is_true,
    predict,
    release_of,
    trimmed,
)

from batcomputer_dev.gitops_health import argocd_health, kstatus
from batcomputer_dev.kube_testing import TITANIC_PASSENGER, patch_spec, wait_for

LUA = (
    Path(__file__).resolve().parents[2] / "examples/gitops/argocd/batmodel-health.lua"
).read_text()


@pytest.fixture(scope="module")
def capture():
    target = os.environ.get("BATCOMPUTER_CAPTURE_STATUSES_TO")

    def judge(state: str, obj: dict) -> tuple[str, str, str]:
        """(Argo CD health, kstatus, Argo CD message) of a live object; saved when asked."""
        obj = trimmed(obj)
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            (Path(target) / f"{state}.json").write_text(json.dumps(obj, indent=2) + "\n")
        health = argocd_health(obj, LUA)
        return health.status, kstatus(obj).status, health.message

    return judge


def _wait_ready(cluster, name, namespace, version):
    return wait_for(
        lambda: get(cluster, "batmodel", name, namespace),
        lambda obj: (
            current(obj)
            and is_true(obj, "Ready")
            and obj["status"].get("servingVersion") == version
        ),
        f"BatModel {name} Ready serving {version}",
    )


def test_new_batmodel_goes_from_no_status_to_healthy(
    kube_cluster, operator_release, published_models, capture
):
    namespace = operator_release.models_namespace
    manifest = batmodel("gitops-new", published_models["titanic-1.0.0"], CREDENTIALS_SECRET)
    created = create(kube_cluster, manifest, namespace)
    assert "status" not in created
    # Argo CD waits for the operator; kstatus's generic rules call a status-less object Current.
    assert capture("no-status", created)[:2] == ("Progressing", "Current")

    ready = _wait_ready(kube_cluster, "gitops-new", namespace, "1.0.0")
    assert capture("ready", ready)[:2] == ("Healthy", "Current")


def test_release_is_progressing_until_the_new_version_serves(
    kube_cluster, operator_release, published_models, capture
):
    namespace = operator_release.models_namespace
    manifest = batmodel("gitops-release", published_models["titanic-1.0.0"], CREDENTIALS_SECRET)
    create(kube_cluster, manifest, namespace)
    _wait_ready(kube_cluster, "gitops-release", namespace, "1.0.0")

    lagging = patch_spec(
        kube_cluster, "gitops-release", namespace, release_of(published_models["titanic-1.0.1"])
    )
    assert lagging["status"]["observedGeneration"] < lagging["metadata"]["generation"]
    argo, kstat, message = capture("generation-lag", lagging)
    assert (argo, kstat) == ("Progressing", "InProgress")
    assert f"generation {lagging['metadata']['generation']}" in message

    rolling = wait_for(
        lambda: get(kube_cluster, "batmodel", "gitops-release", namespace),
        lambda obj: current(obj) and (is_true(obj, "Reconciling") or is_true(obj, "Ready")),
        "the operator to take up version 1.0.1",
    )
    assert is_true(rolling, "Reconciling"), "rollout finished before a poll saw it under way"
    assert rolling["status"]["servingVersion"] == "1.0.0"  # blue/green: the old one serves
    assert capture("rolling-out", rolling)[:2] == ("Progressing", "InProgress")

    done = _wait_ready(kube_cluster, "gitops-release", namespace, "1.0.1")
    assert capture("ready-after-release", done)[:2] == ("Healthy", "Current")


def test_failed_release_is_degraded_while_the_old_version_serves(
    kube_cluster, operator_release, published_models, capture
):
    namespace = operator_release.models_namespace
    good = published_models["titanic-1.0.0"]
    create(kube_cluster, batmodel("gitops-failed", good, CREDENTIALS_SECRET), namespace)
    _wait_ready(kube_cluster, "gitops-failed", namespace, "1.0.0")

    missing = release_of(good)
    missing["version"] = "1.0.2"
    missing["source"]["uri"] = good["spec"]["source"]["uri"].replace("/1.0.0", "/1.0.2")
    patch_spec(kube_cluster, "gitops-failed", namespace, missing)
    stalled = wait_for(
        lambda: get(kube_cluster, "batmodel", "gitops-failed", namespace),
        lambda obj: current(obj) and is_true(obj, "Stalled"),
        "BatModel gitops-failed Stalled on the missing version",
    )
    argo, kstat, message = capture("stalled", stalled)
    assert (argo, kstat) == ("Degraded", "Failed")
    assert "exited 3" in message  # batcomputer-fetch: blob not found
    assert stalled["status"]["servingVersion"] == "1.0.0"
    assert predict(kube_cluster, "gitops-failed", namespace, TITANIC_PASSENGER)

    patch_spec(kube_cluster, "gitops-failed", namespace, release_of(good))
    recovered = _wait_ready(kube_cluster, "gitops-failed", namespace, "1.0.0")
    assert capture("recovered", recovered)[:2] == ("Healthy", "Current")
