"""The test session's end: whether it may stop the local cluster, and proof that it is gone.

A test session stops the local cluster only when it brought the cluster up itself, or
when ``BATCOMPUTER_TEST_TEARDOWN=1`` says a running cluster may be stopped (`make test`
sets it): a cluster that was already up may be in use by another session. After
`batcomputer-cluster down` the host must be as it was: no process, iptables rule,
bridge, mount, cgroup or sysctl change left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.cluster_host import OWN_CHAIN_PREFIXES, component_cgroup, read_sysctl

FORCE_TEARDOWN = "BATCOMPUTER_TEST_TEARDOWN"


def teardown_wanted(kind: str, started_by_this_session: bool, environ: Mapping[str, str]) -> bool:
    """Stop the cluster at the session's end? Only the local one, and only when it is ours."""
    return kind == "local" and (started_by_this_session or environ.get(FORCE_TEARDOWN) == "1")


def processes_mentioning(text: str) -> list[str]:
    """Processes (other than this one) whose command line contains ``text``."""
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


def host_changes(cluster: LocalCluster, original_sysctls: Mapping[str, str | None]) -> list[str]:
    """What the cluster still changes on the host; empty once `down` restored everything."""
    root = str(cluster.paths.root)
    changes = [f"leftover: {leftover}" for leftover in cluster.leftovers()]
    changes += [f"process: {process}" for process in processes_mentioning(root)]
    link = subprocess.run(["ip", "link", "show", cfg.BRIDGE_NAME], check=False, capture_output=True)
    if link.returncode == 0:
        changes.append(f"bridge {cfg.BRIDGE_NAME} still present")
    for save in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([save], capture_output=True, text=True, check=True).stdout
        changes += [f"{save}: {prefix}* rules" for prefix in OWN_CHAIN_PREFIXES if prefix in rules]
    mounts = Path("/proc/self/mountinfo").read_text()
    if root in mounts:
        changes.append(f"mounts under {root}")
    if "/run/netns/cni-" in mounts:
        changes.append("pod network namespaces still mounted")
    changes += [
        f"sysctl {name} is {read_sysctl(name)!r}, was {value!r}"
        for name, value in original_sysctls.items()
        if read_sysctl(name) != value
    ]
    changes += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob("*/kubepods")]
    if component_cgroup().exists():
        changes.append(f"cgroup {component_cgroup()}")
    return changes


def down_and_verify(cluster: LocalCluster) -> list[str]:
    """Stop the running local cluster; every way the host is not restored, as a list."""
    if not processes_mentioning(str(cluster.paths.root)):
        return ["the local cluster was not running at the end of the session"]
    original_sysctls = json.loads(cluster.paths.saved_sysctls.read_text())
    cluster.down()
    return host_changes(cluster, original_sysctls)
