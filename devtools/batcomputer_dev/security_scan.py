"""What a cautious cluster admin scans before letting Batcomputer in.

The Helm chart's rendered output and the Deployment / Service / Ingress the operator
builds for every example BatModel are written to one folder and scanned by checkov
once. A failed check is a finding unless ``checkov-skips.yaml`` lists it with the reason
it is deliberate.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from batcomputer_dev.checkov_tool import Finding, ScanReport
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.manifests import Owner, deployment, ingress, service
from batcomputer_operator.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "batcomputer-operator"
EXAMPLES = REPO / "examples"
SKIP_FILE = REPO / "checkov-skips.yaml"
EXAMPLE_NAMESPACE = "models"
# A digest in the form an admin pins (the value itself only has to be well-formed).
SAMPLE_DIGEST = "sha256:" + "0123456789abcdef" * 4
# The chart as the README's hardening section installs it: images pinned by digest.
HARDENED_VALUES = (
    *("--set", f"image.digest={SAMPLE_DIGEST}"),
    *("--set", f"serverImage=ghcr.io/batcomputer/batcomputer-server@{SAMPLE_DIGEST}"),
    *("--set-json", f'watchNamespaces=["{EXAMPLE_NAMESPACE}"]'),
)


class SkipFileError(ValueError):
    """checkov-skips.yaml is malformed; the message names the entry."""


@dataclass(frozen=True)
class Verdict:
    """Failed checks nobody explained, and explanations no failed check needs any more."""

    unexplained: list[Finding]
    stale_skips: list[str]


def example_batmodels(examples: Path = EXAMPLES) -> list[dict]:
    """Every BatModel document in the examples folder (not its subfolders)."""
    models = []
    for path in sorted(examples.glob("*.yaml")):
        models.extend(
            doc
            for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and doc.get("kind") == "BatModel"
        )
    return models


def operator_manifests(batmodel: Mapping[str, Any], config: OperatorConfig) -> list[dict]:
    """What the operator applies for a BatModel once its version serves."""
    name = batmodel["metadata"]["name"]
    owner = Owner(name=name, namespace=EXAMPLE_NAMESPACE, uid=f"00000000-0000-0000-0000-{name}")
    spec = parse_spec(batmodel["spec"])
    children = [deployment(owner, spec, config), service(owner, spec.version)]
    routed = ingress(owner, spec, config, spec.version)
    return [*children, *([routed] if routed else [])]


def render_chart(helm: Callable[..., subprocess.CompletedProcess[str]], *values: str) -> str:
    result = helm("template", "batcomputer", CHART, "--namespace", "batcomputer-system", *values)
    return result.stdout


def write_scan_inputs(
    folder: Path,
    helm: Callable[..., subprocess.CompletedProcess[str]],
    config: OperatorConfig,
) -> list[Path]:
    """The chart (defaults, and hardened) and the operator's manifests for every example."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "chart-defaults.yaml": render_chart(helm),
        "chart-hardened.yaml": render_chart(helm, *HARDENED_VALUES),
    }
    for model in example_batmodels():
        docs = operator_manifests(model, config)
        files[f"operator-{model['metadata']['name']}.yaml"] = yaml.safe_dump_all(docs)
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files]


def load_skips(path: Path = SKIP_FILE) -> dict[str, str]:
    """check id -> the one-line reason the check is allowed to fail."""
    document = yaml.safe_load(path.read_text()) or {}
    entries = document.get("skips") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise SkipFileError(f"{path.name}: needs a list under 'skips'")
    skips: dict[str, str] = {}
    for index, entry in enumerate(entries):
        check_id = entry.get("id") if isinstance(entry, dict) else None
        reason = entry.get("reason") if isinstance(entry, dict) else None
        if not isinstance(check_id, str) or not check_id.startswith("CKV"):
            raise SkipFileError(f"{path.name}: skips[{index}] needs an id such as CKV_K8S_11")
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
            raise SkipFileError(f"{path.name}: {check_id} needs a one-line reason")
        if check_id in skips:
            raise SkipFileError(f"{path.name}: {check_id} is listed twice")
        skips[check_id] = reason.strip()
    return skips


def judge(report: ScanReport, skips: Mapping[str, str]) -> Verdict:
    unexplained = [finding for finding in report.failed if finding.check_id not in skips]
    failing = {finding.check_id for finding in report.failed}
    return Verdict(unexplained=unexplained, stale_skips=sorted(set(skips) - failing))


def summary(report: ScanReport, skips: Mapping[str, str]) -> str:
    explained = [f for f in report.failed if f.check_id in skips]
    lines = [
        f"checkov: {len(report.passed)} passed, {len(report.failed)} failed "
        f"({len(explained)} listed in {SKIP_FILE.name}), {len(report.skipped)} skipped",
    ]
    lines.extend(_describe(report.failed, skips))
    return "\n".join(lines)


def _describe(findings: Iterable[Finding], skips: Mapping[str, str]) -> list[str]:
    return [
        f"  {f.check_id} {f.resource} ({Path(f.file).name}): {f.check_name}"
        + (f" -- skipped: {skips[f.check_id]}" if f.check_id in skips else " -- UNEXPLAINED")
        for f in findings
    ]
