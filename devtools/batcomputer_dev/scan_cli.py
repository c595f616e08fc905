"""``batcomputer-scan``: checkov over the chart and the operator's manifests, as the tests run it.

Prints passed / failed / skipped figures and every failed check with the reason
checkov-skips.yaml gives for it; exits 1 when a failed check has no reason there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from batcomputer_dev import checkov_tool, security_scan
from batcomputer_dev.helm_tool import helm_binary
from batcomputer_dev.pytest_helm import Helm
from batcomputer_operator.config import OperatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batcomputer-scan", description=__doc__)
    parser.add_argument(
        "--keep", type=Path, help="write the scanned manifests to this folder and keep them"
    )
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batcomputer-scan-") as scratch:
        folder = arguments.keep or Path(scratch)
        helm = Helm(binary=helm_binary(), env=_helm_env(Path(scratch)))
        security_scan.write_scan_inputs(folder, helm, OperatorConfig())
        report = checkov_tool.scan(folder)
    skips = security_scan.load_skips()
    print(security_scan.summary(report, skips))
    verdict = security_scan.judge(report, skips)
    for check_id in verdict.stale_skips:
        print(f"  {check_id} is listed in {security_scan.SKIP_FILE.name} but no longer fails")
    return 1 if verdict.unexplained or verdict.stale_skips else 0


def _helm_env(scratch: Path) -> dict[str, str]:
    """Helm homes of its own, so no user's repositories or plugins leak into the render."""
    return {
        **os.environ,
        **{
            f"HELM_{kind}_HOME": str(scratch / f"helm-{kind.lower()}")
            for kind in ("CACHE", "CONFIG", "DATA")
        },
    }


if __name__ == "__main__":
    sys.exit(main())
