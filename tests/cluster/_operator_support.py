"""Helpers for the operator's cluster tests: the CRD, BatModels' children and conditions."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from batcomputer_dev.azurite import free_port
from batcomputer_dev.kube_testing import (
    TITANIC_PASSENGER,
    call_service,
    find,
    kubectl_json,
    publish,
    wait_for,
)
from batcomputer_dev.pytest_bundles import train_bundle

CRD = Path(__file__).resolve().parents[2] / "crds" / "batmodels.batcomputer.io.yaml"
OPERATOR = Path(sys.executable).parent / "batcomputer-operator"
SECRET = "blob-reader"  # the blob credentials Secret in each operator test namespace


def install_crd(cluster) -> None:
    # Server-side with force: the Helm-installed copy of the same CRD may already be there.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/batmodels.batcomputer.io"
    )


def children(cluster, kind: str, model: str, namespace: str) -> list[dict]:
    found = kubectl_json(
        cluster, "get", kind, "-n", namespace, "-l", f"batcomputer.io/model={model}"
    )
    return found["items"]


def wait_for_only_version(cluster, name: str, namespace: str, version: str) -> None:
    """Until ``version``'s Deployment is the model's only one: the others are retired."""
    survivor = f"{name}-v{version.replace('.', '-')}"
    wait_for(
        lambda: [d["metadata"]["name"] for d in children(cluster, "deployments", name, namespace)],
        lambda names: names == [survivor],
        f"only the {version} Deployment left",
        timeout=60,
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


def titanic_releases(azurite, trained_bundles, workdir: Path, container: str, secret: str):
    """BatModel specs as `batcomputer-publish` printed them: titanic 1.0.0 and a retrained
    1.0.1, published to a fresh `container`, read with the credentials Secret `secret`."""
    blob_container = azurite.make_container(container)
    retrained = train_bundle("titanic", "1.0.1", workdir)
    specs = {}
    for bundle in (trained_bundles.titanic, retrained):
        spec = publish(azurite, blob_container, bundle)["spec"]
        spec["source"]["credentialsSecret"] = secret
        specs[str(spec["version"])] = spec
    return specs


@contextlib.contextmanager
def model_namespace(cluster, azurite, secret: str) -> Iterator[str]:
    """A fresh namespace holding a blob credentials Secret named `secret` for `azurite`."""
    install_crd(cluster)
    name = f"bc-operator-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        *("create", "secret", "generic", secret, "-n", name),
        f"--from-literal=connectionString={azurite.connection_string}",
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextlib.contextmanager
def running_operator(cluster, namespace: str, log: Path, *flags: str) -> Iterator[None]:
    """`batcomputer-operator` on this host watching `namespace`, logging to `log`."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(OPERATOR), "--namespace", namespace, "--liveness-port", str(port), *flags],
            # A port of its own for /metrics too: other operators may run on this host.
            env=dict(
                os.environ,
                KUBECONFIG=str(cluster.kubeconfig),
                BATCOMPUTER_METRICS_PORT=str(free_port()),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _alive(port, process), bool, f"operator liveness (log {log})", timeout=60)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text()[-20000:])


def _alive(port: int, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"operator exited {process.returncode}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def create_batmodel(cluster, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    manifest = {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }
    cluster.kubectl("create", "-f", "-", input_text=yaml.safe_dump(manifest))


def wait_settled(cluster, name, namespace, kind="Ready", reason=None, *, timeout=180.0) -> dict:
    """The BatModel once condition `kind` is True (with `reason`) for its latest generation."""
    return wait_for(
        lambda: find(cluster, "batmodel", name, namespace),
        lambda model: settled(model, kind, reason),
        f"{kind}{'/' + reason if reason else ''} on BatModel {name}",
        timeout=timeout,
    )


@dataclass
class Load:
    """Predictions of `passenger` and version look-ups through the Service, one after the
    other, until stopped: what each prediction and look-up answered (with when), and every
    failure (with when)."""

    cluster: object
    name: str
    namespace: str
    passenger: Mapping[str, Any] = field(default_factory=lambda: TITANIC_PASSENGER)
    answers: list[tuple[float, str]] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)  # each prediction's answer, as JSON
    predictions: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                answer = call_service(
                    self.cluster, self.name, self.namespace, "/api/predict", body=self.passenger
                )
                self.predicted.append(json.dumps(answer, sort_keys=True))
                self.predictions += 1
                info = call_service(self.cluster, self.name, self.namespace, "/api/info")
                self.answers.append((time.monotonic(), info["version"]))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                self.failures.append((time.monotonic(), str(error)))


@contextlib.contextmanager
def load_through_service(
    cluster, name: str, namespace: str, passenger: Mapping[str, Any] = TITANIC_PASSENGER
) -> Iterator[Load]:
    """A `Load` on the model's Service from a thread of its own, stopped on leaving."""
    traffic = Load(cluster, name, namespace, passenger)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        thread.join(timeout=30)


def serve(cluster, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    """A new BatModel of `spec`, once Ready and answering through its Service."""
    create_batmodel(cluster, namespace, name, spec)
    wait_settled(cluster, name, namespace)
    wait_for(
        lambda: call_service(cluster, name, namespace, "/api/info")["version"],
        lambda version: version == spec["version"],
        f"{name} to answer",
        timeout=30,
    )
