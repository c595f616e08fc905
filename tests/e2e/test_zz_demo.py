"""The README's first command works: `batcomputer-demo` ends with real predictions.

Runs after the other e2e tests (file order) in namespaces of its own, with its own
Azurite, and removes what it installed.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from _e2e_support import image_values

from batcomputer_dev.azurite import free_port, recorded, stop_azurite

BIN = Path(sys.executable).parent


@pytest.fixture
def demo_run(kube_cluster, operator_image, server_image, helm, tmp_path):
    suffix = secrets.token_hex(3)
    models, operators = f"demo-models-{suffix}", f"demo-operator-{suffix}"
    # Cluster-wide RBAC objects carry the release name: one per run.
    release = f"demo-{suffix}"
    work_dir = tmp_path / "demo"
    command = [
        str(BIN / "batcomputer-demo"),
        *("--work-dir", str(work_dir), "--kubeconfig", str(kube_cluster.kubeconfig)),
        *("--blob-host", kube_cluster.host_ip, "--blob-port", str(free_port(kube_cluster.host_ip))),
        *("--namespace", models, "--operator-namespace", operators, "--release", release),
    ]
    values = image_values(operator_image, server_image)
    command += [f"--helm-set={value}" for value in values[1::2]]
    try:
        yield subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    finally:
        helm("uninstall", release, "-n", operators, kubeconfig=kube_cluster.kubeconfig, check=False)
        kube_cluster.kubectl("delete", "namespace", models, operators, "--wait=false", check=False)
        azurite = recorded(work_dir / "azurite")
        if azurite is not None:
            stop_azurite(azurite)


def test_demo_trains_publishes_installs_and_predicts(demo_run):
    output = demo_run.stdout
    assert demo_run.returncode == 0, output[-3000:] + demo_run.stderr[-3000:]
    assert "titanic: Ready" in output
    assert "crime: Ready" in output
    # Installed to require pins, so Ready means pinned by the digest publish printed.
    for model in ("titanic", "crime"):
        assert re.search(
            rf"^{model}: version 1\.0\.0 is pinned by its bundle digest sha256:", output, re.M
        )
    assert re.search(r"^titanic\s+1\.0\.0\s+1\.0\.0\s+True\s+http://titanic\.", output, re.M)
    assert re.search(r"^crime\s+1\.0\.0\s+1\.0\.0\s+True\s+http://crime\.", output, re.M)
    survived = re.search(r"^\s+survived\s+([\d.]+)%", output, re.M)
    assert survived and 50 < float(survived.group(1)) <= 100, "a first-class woman mostly survived"
    crime_flags = re.findall(r"^\s+(no suspect identified|not prosecuted)\s+[\d.]+%", output, re.M)
    assert len(crime_flags) == 2
    assert "Swagger UI: http://" in output
