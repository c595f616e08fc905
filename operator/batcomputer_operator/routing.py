"""Pure traffic rules of a blue/green rollout: which version the Service routes to,
which versions' Deployments may go, and which pods actually take traffic.

Traffic goes where the endpoints controller says (the Service's EndpointSlices),
not where the selector points: the two differ for a moment after every switch.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from batcomputer_operator.naming import TEMPLATE_HASH_ANNOTATION


def field(obj: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def rollout_complete(deployment: Mapping[str, Any] | None) -> bool:
    """Every replica of the current template is updated and ready, as seen by the controller.

    A Deployment of zero replicas that runs no pod is complete whether or not its
    controller has observed its latest generation: there is nothing for it to roll out,
    so a model at replicas 0 is Ready in the pass that creates its Deployment.
    """
    if deployment is None:
        return False
    wanted = field(deployment, "spec", "replicas")
    wanted = 1 if wanted is None else wanted
    status = deployment.get("status") or {}
    observed = status.get("observedGeneration", 0)
    return (
        (wanted == 0 or observed >= (field(deployment, "metadata", "generation") or 0))
        and status.get("replicas", 0) == wanted
        and status.get("updatedReplicas", 0) == wanted
        and status.get("readyReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
    )


def routed_deployment(
    service: Mapping[str, Any] | None, deployments: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The Deployment whose pods the live Service selects, if any."""
    selector = field(service, "spec", "selector") or {}
    for deployment in deployments:
        labels = field(deployment, "metadata", "labels") or {}
        if selector and all(labels.get(key) == value for key, value in selector.items()):
            return deployment
    return None


def route_target(desired: Mapping[str, Any], routed: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Blue/green: the Service moves to the desired version only once its rollout is
    complete; until then it stays where it is, unless it routes nowhere yet."""
    return desired if rollout_complete(desired) or routed is None else routed


def to_retire(
    deployments: Sequence[Mapping[str, Any]], keep: Sequence[Mapping[str, Any] | None]
) -> list[Mapping[str, Any]]:
    """Every version's Deployment but those in `keep`: the desired one, the one the
    Service selects, and the one its Endpoints still send traffic to."""
    kept = {field(deployment, "metadata", "name") for deployment in keep if deployment}
    return [d for d in deployments if field(d, "metadata", "name") not in kept]


def pods_of(
    deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The pods `deployment`'s selector matches."""
    selector = field(deployment, "spec", "selector", "matchLabels") or {}
    if not selector:
        return []
    return [
        pod
        for pod in pods
        if all((field(pod, "metadata", "labels") or {}).get(k) == v for k, v in selector.items())
    ]


def current_pods(
    deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """`deployment`'s pods made from its current pod template (they carry its digest).

    Pods of an earlier template are being replaced: whatever failed in them is history
    and says nothing about the current one.
    """
    wanted = _template_hash(field(deployment, "spec", "template"))
    if wanted is None:
        return []
    return [pod for pod in pods_of(deployment, pods) if _template_hash(pod) == wanted]


def _template_hash(obj: Mapping[str, Any] | None) -> str | None:
    return (field(obj, "metadata", "annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)


def ready_backends(endpoint_slices: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Uids of the pods a Service's EndpointSlices list as ready to take traffic.

    A condition left out means ready (the EndpointSlice API's own rule).
    """
    return frozenset(
        uid
        for endpoint_slice in endpoint_slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if field(endpoint, "conditions", "ready") is not False
        and (uid := field(endpoint, "targetRef", "uid"))
    )


def answering_pods(
    backends: frozenset[str],
    pods: Sequence[Mapping[str, Any]],
    deployment: Mapping[str, Any] | None,
) -> int:
    """How many of `deployment`'s pods are among the Service's ready `backends`.

    A Service whose selector just changed still sends traffic to the previous pods
    until the endpoints controller has caught up; this counts what it has caught up to.
    """
    uids = {field(pod, "metadata", "uid") for pod in pods_of(deployment, pods)} - {None}
    return len(backends & uids)


def serving_deployment(
    backends: frozenset[str],
    pods: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    """The Deployment most of whose pods are among the Service's ready backends, if any."""
    counted = [(answering_pods(backends, pods, d), d) for d in deployments]
    best = max(counted, key=lambda pair: pair[0], default=(0, None))
    return best[1] if best[0] > 0 else None


def ready_replicas(deployment: Mapping[str, Any] | None) -> int:
    return field(deployment, "status", "readyReplicas") or 0
