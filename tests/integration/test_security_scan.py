"""checkov, as a cluster admin runs it, over the chart and the operator's manifests: every
failed check is explained in checkov-skips.yaml, and the scan itself stays offline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from batcomputer_dev import checkov_tool, security_scan
from batcomputer_operator.config import OperatorConfig

# strace records every connect(); the scan may open local (AF_UNIX) sockets only.
_INET_CONNECT = re.compile(r"connect\(\d+, \{sa_family=AF_INET6?,")


@pytest.fixture(scope="session")
def scan(helm, tmp_path_factory) -> tuple[checkov_tool.ScanReport, str, list[Path]]:
    """One checkov run over everything, watched by strace for network connections."""
    strace = shutil.which("strace")
    assert strace, "strace (Debian package) is needed to check that the scan stays offline"
    folder = tmp_path_factory.mktemp("scan")
    inputs = security_scan.write_scan_inputs(folder / "manifests", helm, OperatorConfig())
    trace = folder / "strace.log"
    report = checkov_tool.scan(
        folder / "manifests",
        prefix=[strace, "-f", "-qq", "-e", "trace=connect,execve", "-o", str(trace)],
    )
    print(security_scan.summary(report, security_scan.load_skips()))
    return report, trace.read_text(), inputs


def test_every_failed_check_is_explained_in_the_skip_file(scan):
    report, _, _ = scan
    verdict = security_scan.judge(report, security_scan.load_skips())
    assert not verdict.unexplained, "\n".join(
        f"{f.check_id} {f.resource} ({Path(f.file).name}): {f.check_name}"
        for f in verdict.unexplained
    )


def test_the_skip_file_lists_only_checks_that_still_fail(scan):
    report, _, _ = scan
    assert security_scan.judge(report, security_scan.load_skips()).stale_skips == []


def test_every_rendered_file_was_scanned(scan):
    report, _, inputs = scan
    scanned = {Path(f.file).name for f in report.passed + report.failed}
    assert scanned == {path.name for path in inputs}
    assert {"chart-defaults.yaml", "chart-hardened.yaml"} <= scanned
    models = security_scan.example_batmodels()
    assert len(models) >= 2
    assert {f"operator-{m['metadata']['name']}.yaml" for m in models} <= scanned
    assert len(report.passed) > 100


def test_pinned_images_pass_the_digest_check(scan):
    report, _, _ = scan
    digest_checks = [f for f in report.passed + report.failed if f.check_id == "CKV_K8S_43"]
    hardened = [f for f in digest_checks if Path(f.file).name == "chart-hardened.yaml"]
    assert hardened
    assert all(f in report.passed for f in hardened)


def test_every_pod_has_a_network_policy_and_resources(scan):
    report, _, _ = scan
    must_pass = {"CKV2_K8S_6", "CKV_K8S_10", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_35"}
    assert not [f for f in report.failed if f.check_id in must_pass]
    assert must_pass <= {f.check_id for f in report.passed}


def test_the_scan_opens_no_network_connection(scan):
    _, trace, _ = scan
    assert "execve(" in trace  # strace did watch checkov start
    assert not _INET_CONNECT.findall(trace), [
        line for line in trace.splitlines() if _INET_CONNECT.search(line)
    ]
