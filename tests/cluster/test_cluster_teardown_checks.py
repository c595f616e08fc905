"""The checks run after `batcomputer-cluster down` see a running cluster's every trace.

The teardown itself runs once, at the end of the session (the kube_cluster fixture);
here the same checks look at the cluster while it runs, without stopping it.
"""

import json

import pytest

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.cluster_teardown import host_changes


def test_a_running_cluster_shows_as_processes_bridge_rules_and_sysctls(kube_cluster):
    if not kube_cluster.local:
        pytest.skip("the host checks are about the embedded local cluster")
    cluster = LocalCluster()
    saved = json.loads(cluster.paths.saved_sysctls.read_text())
    # As if the host had none of the values up set: each one shows as a change.
    changes = host_changes(cluster, {name: "not-the-value" for name in saved})
    assert any(change.startswith("process: ") for change in changes)
    assert f"bridge {cfg.BRIDGE_NAME} still present" in changes
    assert "iptables-save: KUBE-* rules" in changes
    assert sum(change.startswith("sysctl ") for change in changes) == len(saved) > 0
