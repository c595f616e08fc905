"""`batcomputer-cluster down` leaves the host as it found it.

Runs after every other test (see tests/conftest.py). It stops the local
cluster, so it only does so when this test session brought the cluster up, or
when BATCOMPUTER_TEST_TEARDOWN=1 says a running cluster may be stopped: on a
shared machine a cluster that was already up may be in use by someone else.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.cluster_host import component_cgroup, read_sysctl

FORCE_TEARDOWN = "BATCOMPUTER_TEST_TEARDOWN"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            command_line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command_line:
            found.append(f"{proc.name}: {command_line}")
    return found


def test_down_leaves_no_process_rule_bridge_mount_or_sysctl_change(kube_cluster):
    if not kube_cluster.local:
        pytest.skip("teardown applies to the embedded local cluster only")
    if not (kube_cluster.started_by_this_session or os.environ.get(FORCE_TEARDOWN) == "1"):
        pytest.skip(
            "the local cluster was running before this session and may be in use; "
            f"set {FORCE_TEARDOWN}=1 to stop it anyway"
        )
    cluster = LocalCluster()
    original_sysctls = json.loads(cluster.paths.saved_sysctls.read_text())
    assert processes_mentioning(str(cluster.paths.root)), "the cluster should be running now"

    cluster.down()

    assert cluster.leftovers() == []
    assert processes_mentioning(str(cluster.paths.root)) == []
    link = subprocess.run(["ip", "link", "show", cfg.BRIDGE_NAME], check=False, capture_output=True)
    assert link.returncode != 0, "bridge still present"
    for save in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([save], capture_output=True, text=True, check=True).stdout
        assert "KUBE-" not in rules, save
        assert "BATCOMPUTER-" not in rules, save
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cluster.paths.root) not in mounts
    assert "/run/netns/cni-" not in mounts
    assert {name: read_sysctl(name) for name in original_sysctls} == original_sysctls
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
    assert not component_cgroup().exists()
