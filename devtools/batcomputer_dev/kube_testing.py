"""Helpers the cluster and e2e tests share: kubectl as JSON, polling, models on Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from batcomputer_dev.demo import EXAMPLE_INPUTS
from batcomputer_dev.pytest_azurite import AzuriteService

T = TypeVar("T")

# One Titanic passenger, the shape the model's /api/predict takes (the demo's example row).
TITANIC_PASSENGER = EXAMPLE_INPUTS["titanic"]


def kubectl_json(cluster, *args: str, input_text: str | None = None) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json", input_text=input_text))


def find(cluster, kind: str, name: str, namespace: str) -> dict | None:
    """The object, or None when there is none (no kubectl error to catch)."""
    found = kubectl_json(
        cluster, "get", kind, "-n", namespace, "--field-selector", f"metadata.name={name}"
    )
    return found["items"][0] if found["items"] else None


def patch_spec(cluster, name: str, namespace: str, spec: Mapping[str, Any]) -> dict:
    """Merge-patch a BatModel's spec; the answer is the object right after the write."""
    return kubectl_json(
        cluster,
        *("patch", "batmodel", name, "-n", namespace, "--type", "merge"),
        *("-p", json.dumps({"spec": spec})),
    )


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


def call_service(
    cluster, name: str, namespace: str, path: str, *, body: Any = None, timeout: float = 10
) -> dict:
    """GET (or POST `body` to) the model's Service through its ClusterIP, from the test host."""
    service = find(cluster, "service", name, namespace)
    assert service is not None, f"no Service {name}"
    request = urllib.request.Request(f"http://{service['spec']['clusterIP']}{path}")
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def publish(azurite: AzuriteService, container: str, bundle: Path) -> dict:
    """The BatModel `batcomputer-publish` prints after uploading ``bundle`` to ``container``."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "batcomputer-publish"),
            str(bundle),
            *("--to", azurite.folder_uri(container)),
        ],
        env=dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)
