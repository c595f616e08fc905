"""checkov, the Kubernetes security scanner a cluster admin runs, in a virtualenv of its own.

checkov pins ``packaging<24`` and an old networkx, which pytest and the project's own
dependencies cannot share, so ``tool_venv`` installs it apart, the first time it is needed.
It runs offline: no download of policies, guidelines or mappings and no upload of results
(and the tests check that it opens no network connection).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batcomputer_dev.tool_venv import tool_command

CHECKOV_VERSION = "3.3.30"
_TIMEOUT_SECONDS = 900
# Offline and quiet: what checkov would otherwise fetch or send at start-up.
OFFLINE_ENV = {
    "BC_SKIP_MAPPING": "TRUE",
    "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
    "CHECKOV_SKIP_DOWNLOAD": "TRUE",
    # checkov asks PyPI for a newer release of itself whenever its banner module loads.
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE",
    "SKIP_GUIDELINES_DOWNLOAD": "TRUE",
    "LOG_LEVEL": "WARNING",
    "NO_COLOR": "1",
}


class CheckovToolError(RuntimeError):
    """checkov failed to run; the message says why."""


@dataclass(frozen=True)
class Finding:
    check_id: str
    check_name: str
    resource: str
    file: str


@dataclass(frozen=True)
class ScanReport:
    passed: list[Finding]
    failed: list[Finding]
    skipped: list[Finding]


def checkov_binary() -> Path:
    """The pinned checkov, installed into its own virtualenv on first use."""
    return tool_command("checkov", CHECKOV_VERSION, "checkov")


def scan(
    directory: Path, binary: Path | None = None, prefix: list[str] | None = None
) -> ScanReport:
    """checkov's Kubernetes checks over every manifest file in ``directory``.

    ``prefix`` runs checkov under another command (e.g. ``strace``), for tests that watch it.
    """
    binary = binary or checkov_binary()
    command = [
        *(prefix or []),
        str(binary),
        *("--directory", str(directory), "--framework", "kubernetes"),
        *("--output", "json", "--skip-download", "--skip-results-upload"),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **OFFLINE_ENV},
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )
    # Exit 1 means "some check failed"; anything else is checkov itself failing.
    if result.returncode not in (0, 1):
        raise CheckovToolError(
            f"checkov exited {result.returncode}: {result.stderr[-1500:]}{result.stdout[-500:]}"
        )
    return parse_report(json.loads(result.stdout))


def parse_report(document: Mapping | list) -> ScanReport:
    """checkov's JSON output (one report, or one per framework) as findings."""
    reports = document if isinstance(document, list) else [document]
    kinds: dict[str, list[Finding]] = {"passed": [], "failed": [], "skipped": []}
    for report in reports:
        results = report.get("results", {})
        for kind, findings in kinds.items():
            findings.extend(
                Finding(
                    check_id=item["check_id"],
                    check_name=item["check_name"],
                    resource=item["resource"],
                    file=item.get("file_path", ""),
                )
                for item in results.get(f"{kind}_checks", [])
            )
    return ScanReport(**kinds)
