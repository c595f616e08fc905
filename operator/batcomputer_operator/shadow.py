"""The shadow settings of a Shadow rollout, as pure builders.

During a Shadow both versions run at full size: the candidate's Deployment at
`spec.replicas` behind a Service of its own (`canary.version_service`), which no caller
reaches (the stable Service and the Ingress stay on the serving version alone). The
serving version's pods copy a share of the predictions they answered to that Service;
they learn where from their shadow settings file, a ConfigMap named after their own
Deployment that every model pod mounts as optional (`manifests.shadow_config`).

Only the serving version's ConfigMap ever names a URL, and only while its candidate is
ready: a pod of any other version finds no ConfigMap or `{}`, so a version promoted
after its shadow never copies to itself, and copying stops once the rollout is over.
The kubelet refreshes a mounted ConfigMap on its sync period (about a minute), so the
copies start and stop that much later than the write; the analysis counts only the
copies the serving pods measured, so the delay postpones a verdict, never changes it.
"""

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batcomputer_operator import diff, manifests, naming
from batcomputer_operator.rollout import shadow_settings
from batcomputer_operator.rollout_spec import RolloutSpec


def candidate_url(service: Mapping[str, Any] | None) -> str | None:
    """Where the copies go: the candidate's own Service as the API server shows it, by
    its cluster IP (a cluster need not run DNS for pods); None before it has one. Should
    the Service be made again with another IP, the settings follow it."""
    cluster_ip = ((service or {}).get("spec") or {}).get("clusterIP")
    if not isinstance(cluster_ip, str) or not cluster_ip or cluster_ip == "None":
        return None
    try:
        address = ipaddress.ip_address(cluster_ip)
    except ValueError:
        return None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host}:{manifests.SERVICE_PORT}"


def copying(rollout: RolloutSpec, service: Mapping[str, Any] | None) -> dict[str, Any]:
    """The serving version's settings while its pods copy to the candidate's `service`
    (`{}` while that has no address)."""
    return shadow_settings(rollout, candidate_url(service))


def settings_of(config: Mapping[str, Any] | None) -> Any:
    """The settings a live ConfigMap holds; None when it holds no readable settings."""
    text = ((config or {}).get("data") or {}).get(manifests.SHADOW_FILE)
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Change:
    """One write of a shadow settings ConfigMap: `manifest` None deletes it."""

    name: str
    version: str
    manifest: dict | None
    settings: Mapping[str, Any]


def changes(
    owner: manifests.Owner,
    live: Iterable[Mapping[str, Any]],
    kept: Iterable[str],
    settings: Mapping[str, Mapping[str, Any]],
) -> list[Change]:
    """The writes that leave the model's shadow ConfigMaps as wanted: `settings` (version
    → its settings) for the versions that copy, `{}` for the other `kept` versions that
    already have one, and none for the versions whose Deployment goes or is gone."""
    live_by_name = {config["metadata"]["name"]: config for config in live if _owned(config, owner)}
    kept = set(kept)
    wanted: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for config in live_by_name.values():
        version = (config["metadata"].get("annotations") or {}).get(naming.VERSION_ANNOTATION)
        if version in kept:
            wanted[config["metadata"]["name"]] = (version, {})
    for version, copied in settings.items():
        wanted[_name(owner, version)] = (version, copied)
    found = []
    for name, (version, copied) in sorted(wanted.items()):
        manifest = manifests.shadow_config(owner, version, copied)
        config = live_by_name.get(name)
        if config is None or diff.differs(manifest, config):
            found.append(Change(name, version, manifest, copied))
    for name, config in sorted(live_by_name.items()):
        if name not in wanted:
            version = (config["metadata"].get("annotations") or {}).get(
                naming.VERSION_ANNOTATION, "?"
            )
            found.append(Change(name, version, None, {}))
    return found


def _name(owner: manifests.Owner, version: str) -> str:
    return naming.shadow_config_name(naming.deployment_name(owner.name, version))


def _owned(config: Mapping[str, Any], owner: manifests.Owner) -> bool:
    refs = config["metadata"].get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)
