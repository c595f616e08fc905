"""Helpers for the operator's cluster tests: the CRD, BatModels' children and conditions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batcomputer_dev.kube_testing import kubectl_json

CRD = Path(__file__).resolve().parents[2] / "crds" / "batmodels.batcomputer.io.yaml"


def install_crd(cluster) -> None:
    # Server-side with force: the Helm-installed copy of the same CRD may already be there.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/batmodels.batcomputer.io"
    )


def children(cluster, kind: str, model: str, namespace: str) -> list[dict]:
    found = kubectl_json(
        cluster, "get", kind, "-n", namespace, "-l", f"batcomputer.io/model={model}"
    )
    return found["items"]


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return {}


def settled(obj: Mapping[str, Any] | None, kind: str, reason: str | None = None) -> bool:
    """Condition `kind` is True for the object's latest generation (and has `reason`)."""
    if (
        obj is None
        or (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]
    ):
        return False
    found = condition(obj, kind)
    return found.get("status") == "True" and reason in (None, found.get("reason"))
