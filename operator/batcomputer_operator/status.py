"""Pure status rules: observed children become a kstatus-style BatModel status.

kstatus (what Argo CD, Flux and `kubectl wait` read): Ready=True only when the
desired version serves with every replica, which means the Service's Endpoints
list them (the Endpoints controller, not the selector, decides where traffic
goes); Reconciling=True while getting there; Stalled=True when it will not get
there without a change, with the failing container's own words as the message.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batcomputer_bundle.names import FETCH_FAILURE_REASONS
from batcomputer_operator import pinning
from batcomputer_operator.pinning import Pinning
from batcomputer_operator.routing import current_pods, field, rollout_complete

_WAITING_FAILURES = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_MAX_MESSAGE = 400


@dataclass(frozen=True)
class Failure:
    """Why a version cannot become ready without a change to it."""

    reason: str
    message: str


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:_MAX_MESSAGE] if lines else ""


def _terminated_failure(pod: str, container: str, terminated: Mapping[str, Any], init: bool):
    code = terminated.get("exitCode", 0)
    said = _last_line(terminated.get("message")) or terminated.get("reason") or "no message"
    reason = FETCH_FAILURE_REASONS.get(code, "FetchFailed") if init else "ServerFailed"
    return Failure(reason, f"{container} container of pod {pod} exited {code}: {said}")


def _container_failure(pod: str, status: Mapping[str, Any], init: bool) -> Failure | None:
    name = status.get("name", "?")
    state = status.get("state") or {}
    last = field(status, "lastState", "terminated")
    terminated = state.get("terminated")
    if terminated is not None:
        if terminated.get("exitCode", 0) != 0:
            return _terminated_failure(pod, name, terminated, init)
        return None
    waiting = state.get("waiting") or {}
    if last is not None and last.get("exitCode", 0) != 0 and not status.get("ready"):
        return _terminated_failure(pod, name, last, init)
    if waiting.get("reason") in _WAITING_FAILURES:
        said = _last_line(waiting.get("message")) or waiting["reason"]
        return Failure(waiting["reason"], f"{name} container of pod {pod}: {said}")
    return None


def pod_failure(pods: Sequence[Mapping[str, Any]]) -> Failure | None:
    """The first failing init or server container over all pods, in pod-name order."""
    for pod in sorted(pods, key=lambda p: field(p, "metadata", "name") or ""):
        name = field(pod, "metadata", "name") or "?"
        for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
            for container in field(pod, "status", key) or []:
                failure = _container_failure(name, container, init)
                if failure is not None:
                    return failure
    return None


def _unready_server(pods: Sequence[Mapping[str, Any]]) -> str | None:
    for pod in sorted(pods, key=lambda p: field(p, "metadata", "name") or ""):
        for container in field(pod, "status", "containerStatuses") or []:
            running = field(container, "state", "running") is not None
            if container.get("name") == "server" and running and not container.get("ready"):
                return field(pod, "metadata", "name")
    return None


def deployment_failure(
    deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]] = ()
) -> Failure | None:
    """A failure the Deployment controller reports, with what the pods show of it.

    Until the controller has seen the Deployment's latest generation, its conditions
    are about the previous pod template.
    """
    observed = field(deployment, "status", "observedGeneration") or 0
    if observed < (field(deployment, "metadata", "generation") or 0):
        return None
    for condition in field(deployment, "status", "conditions") or []:
        kind, status = condition.get("type"), condition.get("status")
        if kind == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            message = condition.get("message") or "the rollout made no progress"
            unready = _unready_server(pods)
            if unready is not None:
                message += (
                    f" The server container of pod {unready} runs but never became ready:"
                    " its /readyz says why."
                )
            return Failure("ProgressDeadlineExceeded", message)
        if kind == "ReplicaFailure" and status == "True":
            return Failure("ReplicaFailure", condition.get("message") or "pods cannot be created")
    return None


def rollout_failure(
    deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> Failure | None:
    """Why the desired version's rollout cannot finish, judged by its current template's
    pods alone (of `pods`, the model's pods) and its Deployment controller."""
    if rollout_complete(deployment):
        return None
    current = current_pods(deployment, pods)
    return pod_failure(current) or deployment_failure(deployment, current)


@dataclass(frozen=True)
class Observed:
    """What one reconcile pass saw and did, the input of the status rules."""

    generation: int
    desired_version: str | None
    replicas: int
    ready_replicas: int
    complete: bool  # desired version's rollout done and the Service selects it
    answering: int  # desired version's pods listed as ready in the Service's Endpoints
    serving_version: str | None
    failure: Failure | None
    url: str
    ingress_path: str | None
    pinning: Pinning | None = None  # None while the spec cannot be read
    rollout: Mapping[str, Any] | None = None  # status.rollout of a Canary or Shadow


@dataclass(frozen=True)
class _Context:
    previous: Sequence[Mapping[str, Any]]
    now: str
    generation: int


def _condition(
    context: _Context, kind: str, status: bool, reason: str, message: str
) -> dict[str, Any]:
    value = "True" if status else "False"
    before = next((c for c in context.previous if c.get("type") == kind), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == value else None
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or context.now,
        "observedGeneration": context.generation,
    }


def _summary(seen: Observed) -> tuple[bool, bool, bool, str, str]:
    """(ready, reconciling, stalled, reason, message)."""
    if seen.failure is not None:
        return False, False, True, seen.failure.reason, seen.failure.message
    if seen.complete and seen.replicas == 0:
        message = f"version {seen.desired_version} is stopped: replicas is 0, no pod serves"
        return True, False, False, "Stopped", message
    if seen.complete and seen.answering >= seen.replicas:
        message = (
            f"version {seen.desired_version} serves with "
            f"{seen.ready_replicas}/{seen.replicas} ready replicas"
        )
        return True, False, False, "Serving", message
    serving = seen.serving_version or "nothing"
    progress = f"{seen.ready_replicas}/{seen.replicas} replicas ready"
    if seen.complete:
        progress += f", {seen.answering}/{seen.replicas} in the Service's endpoints"
    if seen.serving_version == seen.desired_version:
        message = f"version {seen.desired_version} is scaling: {progress}"
        return False, True, False, "Scaling", message
    if seen.complete:
        message = (
            f"switching traffic to version {seen.desired_version}: {progress}; "
            f"{serving} serves meanwhile"
        )
        return False, True, False, "SwitchingTraffic", message
    message = f"rolling out version {seen.desired_version}: {progress}; {serving} serves meanwhile"
    return False, True, False, "RollingOut", message


def build_status(seen: Observed, previous: Sequence[Mapping[str, Any]], now: str) -> dict[str, Any]:
    """The whole status; keys set to None are to be removed (merge-patch semantics).

    A condition keeps its lastTransitionTime from `previous` unless its status flips.
    Every condition carries the one summary message: the 1.20 API server turns an
    empty string in a merge patch into null, which the schema then refuses.
    """
    context = _Context(previous, now, seen.generation)
    ready, reconciling, stalled, reason, message = _summary(seen)
    settled = "Ready" if ready else reason
    return {
        "observedGeneration": seen.generation,
        "conditions": [
            _condition(context, "Ready", ready, reason, message),
            _condition(
                context,
                "Reconciling",
                reconciling,
                reason if reconciling else settled,
                message,
            ),
            _condition(
                context,
                "Stalled",
                stalled,
                reason if stalled else settled,
                message,
            ),
            *_pinned(context, seen.pinning),
        ],
        "desiredVersion": seen.desired_version,
        "servingVersion": seen.serving_version,
        "replicas": seen.replicas,
        "readyReplicas": seen.ready_replicas,
        "url": seen.url,
        "ingressPath": seen.ingress_path,
        "rollout": dict(seen.rollout) if seen.rollout is not None else None,
    }


def _pinned(context: _Context, pin: Pinning | None) -> list[dict[str, Any]]:
    """The Pinned condition, apart from the kstatus three: whether the bundle is pinned by
    its digest says nothing about progress, and GitOps users alert on Pinned=False."""
    if pin is None:
        return []
    return [_condition(context, pinning.CONDITION, pin.pinned, pin.reason, pin.message)]


def status_differs(new: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether a status patch would change anything the operator owns."""
    live = live or {}
    wanted = {key: value for key, value in new.items() if value is not None}
    return wanted != {key: live[key] for key in new if live.get(key) is not None}
