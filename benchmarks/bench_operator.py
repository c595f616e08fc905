"""Rollout times of the BatModel operator on the local cluster, as a user sees them.

    .venv/bin/python benchmarks/bench_operator.py [--rounds 3]

Needs the local cluster up (`batcomputer-cluster up`). Builds and imports the
server image (layer cache), trains Titanic 1.0.0 and 1.0.1, publishes both to an
Azurite on the cluster's bridge, runs `batcomputer-operator` on this host
against one fresh namespace, and per round measures, from the API write:

* apply-to-Ready: `kubectl create` of a BatModel until Ready=True for its generation;
* version switch: a 1.0.0 -> 1.0.1 bump until Ready=True serving 1.0.1;
* rollback: 1.0.1 -> 1.0.0 once 1.0.1 serves (1.0.0 is retired by then: a full rollout);
* failure detected: a bump to a version whose blob is missing until Stalled=True;
* revert of the failure: back to the serving version until Ready=True again.

Prints figures only, with the load average (other load on the machine moves them).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev import images
from batcomputer_dev.azurite import free_port, start_azurite, stop_azurite
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.k8s_build import ensure_binaries
from batcomputer_dev.pytest_azurite import AzuriteService

BIN = Path(sys.executable).parent
CRD = Path(__file__).resolve().parents[1] / "crds" / "batmodels.batcomputer.io.yaml"


class _Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.command = [str(ensure_binaries() / "kubectl"), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input_text: str | None = None) -> str:
        return subprocess.run(
            [*self.command, *args], input=input_text, capture_output=True, text=True, check=True
        ).stdout

    def model(self, name: str, namespace: str) -> dict:
        return json.loads(self("get", "batmodel", name, "-n", namespace, "-o", "json"))


def _conditions(model: dict) -> dict[str, str]:
    status = model.get("status") or {}
    if status.get("observedGeneration") != model["metadata"]["generation"]:
        return {}
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


def _serving(version: str):
    def done(model: dict) -> bool:
        serving = (model.get("status") or {}).get("servingVersion")
        return _conditions(model).get("Ready") == "True" and serving == version

    return done


def _stalled(model: dict) -> bool:
    return _conditions(model).get("Stalled") == "True"


def _time_until(kubectl: _Kubectl, name: str, namespace: str, done) -> float:
    started = time.monotonic()
    while not done(kubectl.model(name, namespace)):
        if time.monotonic() - started > 300:
            raise SystemExit(f"{name}: no result after 300 s")
        time.sleep(0.1)
    return time.monotonic() - started


def _publish(azurite: AzuriteService, container: str, bundle: Path) -> dict:
    printed = subprocess.run(
        [str(BIN / "batcomputer-publish"), str(bundle), "--to", azurite.folder_uri(container)],
        env=dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = yaml.safe_load(printed)["spec"]
    spec["source"]["credentialsSecret"] = "blob-reader"
    return spec


def _train(out: Path, version: str) -> Path:
    subprocess.run(
        [
            *(str(BIN / "batcomputer-train"), "titanic", "--version", version),
            *("--out", str(out), "--quiet"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out / "titanic" / version


def _rounds(kubectl: _Kubectl, namespace: str, specs: dict[str, dict], rounds: int) -> dict:
    good, newer = specs["1.0.0"], specs["1.0.1"]
    missing = {**good, "version": "9.9.9"}
    missing["source"] = {**good["source"], "uri": good["source"]["uri"] + "-missing"}
    steps = [
        ("version switch", newer, _serving("1.0.1")),
        ("rollback", good, _serving("1.0.0")),
        ("failure detected", missing, _stalled),
        ("failure revert", good, _serving("1.0.0")),
    ]
    figures: dict[str, list[float]] = {"apply-to-Ready": []}
    for round_ in range(rounds):
        name = f"bench-{round_}"
        manifest = {
            "apiVersion": "batcomputer.io/v1alpha1",
            "kind": "BatModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": good,
        }
        kubectl("create", "-f", "-", input_text=yaml.safe_dump(manifest))
        figures["apply-to-Ready"].append(_time_until(kubectl, name, namespace, _serving("1.0.0")))
        for label, spec, done in steps:
            patch = json.dumps({"spec": spec})
            kubectl("patch", "batmodel", name, "-n", namespace, "--type", "merge", "-p", patch)
            figures.setdefault(label, []).append(_time_until(kubectl, name, namespace, done))
        kubectl("delete", "batmodel", name, "-n", namespace, "--wait=false")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds

    local = LocalCluster()
    if not local.healthy():
        raise SystemExit("the local cluster is not up: run `batcomputer-cluster up` first")
    kubectl = _Kubectl(local.paths.kubeconfig)
    (server_image,) = images.build_images(["server"])
    images.import_into_cluster(server_image, local.paths)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    azurite = AzuriteService(
        start_azurite(cfg.BRIDGE_IP, free_port(cfg.BRIDGE_IP), work / "azurite")
    )
    namespace = f"bench-operator-{secrets.token_hex(3)}"
    operator = None
    try:
        container = azurite.make_container("bench")
        specs = {v: _publish(azurite, container, _train(work, v)) for v in ("1.0.0", "1.0.1")}
        kubectl("create", "namespace", namespace)
        kubectl(
            *("create", "secret", "generic", "blob-reader", "-n", namespace),
            f"--from-literal=connectionString={azurite.connection_string}",
        )
        operator = subprocess.Popen(
            [
                *(str(BIN / "batcomputer-operator"), "--namespace", namespace),
                *("--server-image", server_image, "--liveness-port", str(free_port())),
            ],
            env=dict(os.environ, KUBECONFIG=str(local.paths.kubeconfig)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        figures = _rounds(kubectl, namespace, specs, rounds)
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        stop_azurite(azurite.process)

    print(f"BatModel rollouts on the local cluster, {rounds} rounds (seconds from the API write)")
    for label, values in figures.items():
        print(
            f"  {label:17s} median {statistics.median(values):5.1f}"
            f"  min {min(values):5.1f}  max {max(values):5.1f}"
        )
    print("  load average: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
