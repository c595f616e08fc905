"""Small helpers for e2e tests: the chart, BatModels and their children via the real kubectl."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHART = Path(__file__).resolve().parents[2] / "helm" / "batcomputer-operator"
CREDENTIALS_SECRET = "blob-reader"

# One Titanic passenger, the shape the model's /api/predict takes.
TITANIC_PASSENGER = {
    "pclass": "1st",
    "sex": "female",
    "age": 29,
    "sibsp": 0,
    "parch": 0,
    "fare": 80.0,
    "embarked": "Southampton",
}


def kubectl_json(cluster, *args: str, input_text: str | None = None) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json", input_text=input_text))


def get(cluster, kind: str, name: str, namespace: str) -> dict:
    return kubectl_json(cluster, "get", kind, name, "-n", namespace)


def create(cluster, manifest: Mapping[str, Any], namespace: str) -> dict:
    """Create and return the object as the API server stored it (before any controller acts)."""
    return kubectl_json(
        cluster, "create", "-n", namespace, "-f", "-", input_text=json.dumps(manifest)
    )


def patch_spec(cluster, name: str, namespace: str, spec: Mapping[str, Any]) -> dict:
    """Merge-patch a BatModel's spec; the answer is the object right after the write."""
    return kubectl_json(
        cluster,
        *("patch", "batmodel", name, "-n", namespace, "--type", "merge"),
        *("-p", json.dumps({"spec": spec})),
    )


def batmodel(name: str, published: Mapping[str, Any], secret: str, replicas: int = 1) -> dict:
    """A BatModel named ``name`` serving the bundle ``batcomputer-publish`` printed."""
    spec = published["spec"]
    return {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": name},
        "spec": {
            "version": str(spec["version"]),
            "source": {**spec["source"], "credentialsSecret": secret},
            "replicas": replicas,
        },
    }


def release_of(published: Mapping[str, Any]) -> dict:
    """The spec fields a version bump changes (what the CI pipeline writes to Git)."""
    spec = published["spec"]
    return {
        "version": str(spec["version"]),
        "source": {"uri": spec["source"]["uri"], "sha256": spec["source"]["sha256"]},
    }


def condition(obj: Mapping[str, Any], kind: str) -> dict | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return None


def is_true(obj: Mapping[str, Any], kind: str) -> bool:
    found = condition(obj, kind)
    return found is not None and found.get("status") == "True"


def current(obj: Mapping[str, Any]) -> bool:
    """The status describes the object's latest spec."""
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def wait_for(
    probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 180.0
) -> T:
    """Poll ``probe`` until ``done`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {value}")
        time.sleep(0.25)


def trimmed(obj: Mapping[str, Any]) -> dict:
    """A live BatModel without server bookkeeping: what GitOps tools look at."""
    metadata = obj["metadata"]
    kept = ("name", "namespace", "generation", "creationTimestamp", "deletionTimestamp")
    result = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {key: metadata[key] for key in kept if key in metadata},
        "spec": obj["spec"],
    }
    if "status" in obj:
        result["status"] = obj["status"]
    return result


def predict(cluster, name: str, namespace: str, row: Mapping[str, Any]) -> dict:
    """POST one row to the model's Service (its ClusterIP is reachable from the test host)."""
    service = get(cluster, "service", name, namespace)
    request = urllib.request.Request(
        f"http://{service['spec']['clusterIP']}/api/predict",
        data=json.dumps(row).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.load(response)


def image_values(operator_image: str, server_image: str) -> list[str]:
    """helm --set flags running the images the session built (or was given)."""
    repository, _, tag = operator_image.rpartition(":")
    if not repository or "/" in tag:
        pytest.fail(f"operator image {operator_image!r} has no tag; give it as repository:tag")
    return [
        *("--set", f"image.repository={repository}", "--set", f"image.tag={tag}"),
        *("--set", f"serverImage={server_image}"),
    ]
