"""How GitOps tools judge a live BatModel: Argo CD's Lua health check and kstatus.

Argo CD runs the health script from ``examples/gitops/argocd/batmodel-health.lua``
in Lua 5.1 (gopher-lua) with the live object as the global ``obj``; here the same
script runs in a real Lua 5.1 through lupa. Flux (and ``kubectl`` tooling built
on cli-utils) computes kstatus; ``kstatus`` below follows the generic rules of
sigs.k8s.io/cli-utils ``pkg/kstatus/status`` for a custom resource, which is
all a BatModel gets: deletion, then observedGeneration, then the Reconciling and
Stalled conditions, otherwise Current.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ARGOCD_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def argocd_health(obj: Mapping[str, Any], script: str, lua: str = "lua51") -> Health:
    """Run an Argo CD health script on ``obj`` in a fresh Lua runtime (``lupa.<lua>``)."""
    runtime = importlib.import_module(f"lupa.{lua}").LuaRuntime(unpack_returned_tuples=False)
    runtime.globals().obj = runtime.table_from(dict(obj), recursive=True)
    result = runtime.execute(script)
    if result is None or result["status"] not in ARGOCD_STATUSES:
        raise ValueError(f"health script returned no valid status (allowed: {ARGOCD_STATUSES})")
    return Health(status=result["status"], message=result["message"] or "")


def kstatus(obj: Mapping[str, Any]) -> Health:
    """kstatus of a custom resource: InProgress, Failed, Current or Terminating."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return Health("Terminating", "Resource scheduled for deletion")
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return Health(
            "InProgress",
            f"{obj.get('kind')} generation is {generation}, "
            f"but latest observed generation is {observed}",
        )
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Reconciling":
            return Health("InProgress", condition.get("message", ""))
        if condition.get("type") == "Stalled":
            return Health("Failed", condition.get("message", ""))
    return Health("Current", "Resource is current")


def condition_status(obj: Mapping[str, Any], kind: str) -> str | None:
    """``"True"``/``"False"``/``"Unknown"`` of the condition ``kind``, None when absent."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get("status")
    return None
