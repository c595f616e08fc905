"""Which pods may talk to which, as the NetworkPolicies allow: network-config-analyzer (NCA),
a NetworkPolicy evaluator that reads manifests offline, in a virtualenv of its own (it pins
networkx and PyYAML versions of its own)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from batcomputer_dev.tool_venv import tool_command

NCA_VERSION = "2.1.0"
_TIMEOUT_SECONDS = 300
# "models/client[Deployment] => models/titanic-v1-0-0[Deployment] : {protocols:TCP,...}"
_EDGE = re.compile(r"^(\S+) => (\S+) : (.+)$")
_KIND = re.compile(r"\[\w+\]$")


class NetworkPolicyToolError(RuntimeError):
    """The evaluator failed to run; the message says why."""


def nca_binary() -> Path:
    return tool_command("network-config-analyzer", NCA_VERSION, "nca")


def connectivity(folder: Path) -> dict[tuple[str, str], frozenset[str]]:
    """(source, destination) -> the connections allowed between them, for every pair that
    may connect, e.g. ``{"{protocols:TCP,dst_ports:8000}"}``.

    Workloads are ``namespace/name``; addresses outside the cluster are IP ranges such as
    ``0.0.0.0-255.255.255.255``. Pairs that may not connect at all are absent.
    """
    result = subprocess.run(
        [
            str(nca_binary()),
            *("--connectivity", "--resource_list", str(folder)),
            *("--output_format", "txt_no_fw_rules", "--output_endpoints", "deployments"),
        ],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )
    # NCA skips with a message, not an error, what it cannot read (e.g. a file named
    # chart.yaml, which it takes for a Helm chart): an unread policy must not pass unseen.
    if result.returncode != 0 or "Skipping" in result.stdout + result.stderr:
        raise NetworkPolicyToolError(
            f"nca exited {result.returncode}: {result.stderr[-1500:]}{result.stdout[-500:]}"
        )
    edges: dict[tuple[str, str], set[str]] = {}
    for line in result.stdout.splitlines():
        match = _EDGE.match(line.strip())
        if match:
            source, destination, allowed = match.groups()
            pair = (_KIND.sub("", source), _KIND.sub("", destination))
            edges.setdefault(pair, set()).add(allowed)
    return {pair: frozenset(allowed) for pair, allowed in edges.items()}
