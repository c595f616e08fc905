"""Small helpers for e2e tests: the chart, BatModels and their children via the real kubectl."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from batcomputer_dev.kube_testing import call_service, kubectl_json

CHART = Path(__file__).resolve().parents[2] / "helm" / "batcomputer-operator"
CREDENTIALS_SECRET = "blob-reader"
KUBE_PROXY_SECONDS = 10


def get(cluster, kind: str, name: str, namespace: str) -> dict:
    return kubectl_json(cluster, "get", kind, name, "-n", namespace)


def create(cluster, manifest: Mapping[str, Any], namespace: str) -> dict:
    """Create and return the object as the API server stored it (before any controller acts)."""
    return kubectl_json(
        cluster, "create", "-n", namespace, "-f", "-", input_text=json.dumps(manifest)
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
        "source": {"uri": spec["source"]["uri"], "digest": spec["source"]["digest"]},
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
    """POST one row to the model's Service (its ClusterIP is reachable from the test host).

    A new model is Ready once its Service's EndpointSlice lists the pod; the node's
    kube-proxy writes the rules that take the ClusterIP there a moment later, and until
    then a connection is refused, so refusals are retried for a few seconds.
    """
    deadline = time.monotonic() + KUBE_PROXY_SECONDS
    while True:
        try:
            return call_service(cluster, name, namespace, "/api/predict", body=row, timeout=15)
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError):
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def image_values(operator_image: str, server_image: str) -> list[str]:
    """helm --set flags running the images the session built (or was given)."""
    repository, _, tag = operator_image.rpartition(":")
    if not repository or "/" in tag:
        pytest.fail(f"operator image {operator_image!r} has no tag; give it as repository:tag")
    return [
        *("--set", f"image.repository={repository}", "--set", f"image.tag={tag}"),
        *("--set", f"serverImage={server_image}"),
    ]
