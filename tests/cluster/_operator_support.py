"""Helpers for the operator's cluster tests: the CRD, BatModels and their children via kubectl."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CRD = Path(__file__).resolve().parents[2] / "crds" / "batmodels.batcomputer.io.yaml"


def install_crd(cluster) -> None:
    # Server-side with force: the Helm-installed copy of the same CRD may already be there.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/batmodels.batcomputer.io"
    )


def kubectl_json(cluster, *args: str, input_text: str | None = None) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json", input_text=input_text))


def get(cluster, kind: str, name: str, namespace: str) -> dict | None:
    found = kubectl_json(
        cluster, "get", kind, "-n", namespace, "--field-selector", f"metadata.name={name}"
    )
    return found["items"][0] if found["items"] else None


def children(cluster, kind: str, model: str, namespace: str) -> list[dict]:
    found = kubectl_json(
        cluster, "get", kind, "-n", namespace, "-l", f"batcomputer.io/model={model}"
    )
    return found["items"]


def patch_spec(cluster, name: str, namespace: str, spec: Mapping[str, Any]) -> dict:
    return kubectl_json(
        cluster,
        *("patch", "batmodel", name, "-n", namespace, "--type", "merge"),
        *("-p", json.dumps({"spec": spec})),
    )


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return {}


def settled(obj: Mapping[str, Any] | None, kind: str, reason: str | None = None) -> bool:
    """Condition `kind` is True for the object's latest generation (and has `reason`)."""
    if (
        obj is None
        or (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]
    ):
        return False
    found = condition(obj, kind)
    return found.get("status") == "True" and reason in (None, found.get("reason"))


def wait_for(
    probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 180.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {value}")
        time.sleep(0.25)


def call_service(
    cluster, name: str, namespace: str, path: str, *, body: Any = None, timeout: float = 10
) -> dict:
    """GET (or POST `body` to) the model's Service through its ClusterIP, from the test host."""
    service = get(cluster, "service", name, namespace)
    assert service is not None, f"no Service {name}"
    request = urllib.request.Request(f"http://{service['spec']['clusterIP']}{path}")
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)
