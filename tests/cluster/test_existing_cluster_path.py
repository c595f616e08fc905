"""The README's "your own cluster" path, with the local cluster standing in for one.

A slice of the cluster tier runs in a pytest of its own with exactly the variables
the README lists: the CRD, the operator, a model pod fetching from the pods' Azurite.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLICE = (
    "tests/cluster/test_crd_admission.py::test_replicas_default_to_one",
    "tests/cluster/test_operator_rollout.py::test_deleting_the_batmodel_removes_its_children",
)


def test_a_slice_of_the_cluster_tier_passes_on_an_existing_cluster(
    kube_cluster, server_image, operator_image
):
    if not kube_cluster.local:
        pytest.skip("this session already runs against an existing cluster")
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BATCOMPUTER_") and name != "KUBECONFIG"
    }
    environ |= {
        "BATCOMPUTER_USE_EXISTING_CLUSTER": "1",
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "PATH": f"{Path(kube_cluster.kubectl_binary).parent}{os.pathsep}{environ['PATH']}",
        "BATCOMPUTER_SERVER_IMAGE": server_image,
        "BATCOMPUTER_OPERATOR_IMAGE": operator_image,
        "BATCOMPUTER_HOST_IP": kube_cluster.host_ip,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *SLICE],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert f"{len(SLICE)} passed" in result.stdout
