"""The children of one Canary step, as pure builders.

During a Canary both versions run at once: the candidate's Deployment at its share of
`spec.replicas` (`rollout.replica_split`), the serving version's at the rest, and the
model's stable Service selects both versions' pods by the model label alone. The
Service widens only once every candidate pod of the first step is ready, so a step's
share is in place from the moment it counts, and a candidate that never gets ready
never answers; it stays wide while later steps add candidate pods.

The serving version's Deployment is rescaled from what the cluster shows of it: the
BatModel's spec now names the candidate, so the serving version's own spec (its bundle,
digest, resources) survives only in its live Deployment. It is applied whole, every
field as it stands, so the write changes the replica count and nothing else.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from batcomputer_operator import manifests, naming
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.rollout import Split, replica_split, stable_selector
from batcomputer_operator.spec import BatModelSpec

# Written by the Deployment controller or kubectl, never by the operator: applying them
# would take them over.
_FOREIGN_ANNOTATIONS = ("deployment.kubernetes.io/", "kubectl.kubernetes.io/last-applied")


def rescaled(live: Mapping[str, Any], replicas: int) -> dict:
    """The whole manifest of the `live` Deployment with `replicas` replicas."""
    metadata = live["metadata"]
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if not key.startswith(_FOREIGN_ANNOTATIONS)
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": list(metadata.get("ownerReferences") or []),
        },
        "spec": {**live["spec"], "replicas": replicas},
    }


def widened_service(owner: manifests.Owner, serving_version: str) -> dict:
    """The stable Service during a Canary step: every version's pods, `serving_version`
    still named as the one it serves."""
    service = manifests.service(owner, serving_version)
    return {**service, "spec": {**service["spec"], "selector": stable_selector(owner.name)}}


def version_service(owner: manifests.Owner, version: str) -> dict:
    """A Service of `version`'s pods alone, named like its Deployment: where an NGINX
    canary Ingress and the model's Ingress send their shares."""
    service = manifests.service(owner, version)
    metadata = {**service["metadata"], "name": naming.deployment_name(owner.name, version)}
    return {**service, "metadata": metadata}


@dataclass(frozen=True)
class StepChildren:
    candidate: dict  # the candidate's Deployment at its share
    serving: dict  # the serving version's Deployment at the rest
    service: dict  # the stable Service
    split: Split
    widened: bool  # whether the Service selects the candidate's pods


def step_children(
    owner: manifests.Owner,
    spec: BatModelSpec,
    config: OperatorConfig,
    serving: Mapping[str, Any],
    weight: int,
    *,
    widen: bool,
) -> StepChildren:
    """The children of a Canary step at `weight` % of `spec`'s version next to the
    `serving` Deployment; `widen`: whether the stable Service selects the candidate's
    pods too."""
    split = replica_split(weight, spec.replicas)
    candidate = manifests.deployment(owner, replace(spec, replicas=split.canary), config)
    serving_version = (serving["metadata"].get("annotations") or {}).get(
        manifests.VERSION_ANNOTATION, ""
    )
    service = (
        widened_service(owner, serving_version)
        if widen
        else manifests.service(owner, serving_version)
    )
    return StepChildren(
        candidate=candidate,
        serving=rescaled(serving, split.stable),
        service=service,
        split=split,
        widened=widen,
    )
