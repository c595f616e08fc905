"""Canary and Shadow rollouts without a service mesh, as pure rules.

Given the rollout spec, the step a rollout is in, how long it has been there and what
the analysis measured, `next_action` says what to do: keep waiting, advance to the next
step, promote the new version, or roll it back naming the threshold it failed.

Traffic is split with what every cluster has. The model's stable Service selects the
pods of both versions (by model label only), so kube-proxy spreads connections evenly
over the ready pods and a version's share is its share of the pods: `replica_split`
turns a weight into pod counts out of `spec.replicas`. With N replicas the achievable
shares are the multiples of 100/N %; the nearest one is taken, and a canary always keeps
at least one pod and leaves the stable version at least one (so with N replicas the
shares run from 100/N to 100 - 100/N %). An NGINX Ingress splits exactly instead: when
the model's Ingress class is one of NGINX's, `canary_ingress` gives the second Ingress
with NGINX's canary annotations, and each Ingress then routes to its own version's
Service (`version_service`), so the Ingress weight is not multiplied by the pod split.

Shadow: the serving version copies `mirrorPercent` % of its requests to the new
version's own Service (`shadow_settings`) and compares the answers; the new version answers
no caller. Either way the analysis thresholds are checked as soon as enough requests
were seen, so a failing version goes back within one analysis interval rather than
at the end of its step.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batcomputer_operator.naming import MODEL_LABEL, VERSION_LABEL
from batcomputer_operator.rollout_spec import Analysis, RolloutSpec, Strategy

NGINX_CANARY = "nginx.ingress.kubernetes.io/canary"
NGINX_CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
NGINX_CLASSES = frozenset({"nginx", "ingress-nginx", "nginx-internal", "nginx-public"})


class Action(StrEnum):
    WAIT = "Wait"
    ADVANCE = "Advance"
    PROMOTE = "Promote"
    ROLL_BACK = "RollBack"


@dataclass(frozen=True)
class Measurement:
    """What the new version did over the current step.

    `requests`: requests it answered (Shadow: copies it was sent); `errors`: of those,
    5xx answers (Shadow: copies that failed or timed out); `p99_seconds`: its answer
    time's 99th percentile, None without samples; `disagreement`: Shadow only, the
    largest mean |Δp| of any flag between the two versions, None without comparisons;
    `counting_since`: RFC 3339, when the analysis first counted one of `requests` in this
    step (None: not yet). A Shadow's duration runs from then, so the time its serving
    pods take to receive their shadow settings does not shorten the comparison.
    """

    requests: int = 0
    errors: int = 0
    p99_seconds: float | None = None
    disagreement: float | None = None
    counting_since: str | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    step: int  # the step to be in after the action (index into steps; 0 for Shadow)
    message: str
    failed_threshold: str | None = None  # the analysis field that failed, on ROLL_BACK
    # On WAIT, seconds until the step's period is over. Not in the message: a status
    # that changed every pass would cause a pass of its own.
    recheck: float | None = None


def next_action(
    rollout: RolloutSpec, step: int, elapsed_seconds: float, measured: Measurement
) -> Decision:
    """What a rollout in `step` for `elapsed_seconds` does next, given `measured`."""
    if rollout.strategy is Strategy.BLUE_GREEN:
        return Decision(Action.PROMOTE, 0, "blue/green: no analysis")
    if rollout.strategy is Strategy.CANARY and not 0 <= step < len(rollout.steps):
        raise ValueError(f"step {step} is not one of the {len(rollout.steps)} canary steps")
    analysis = rollout.analysis
    enough = measured.requests >= analysis.min_requests and measured.requests > 0
    if enough:
        failed = _failed_threshold(rollout, measured)
        if failed is not None:
            return Decision(Action.ROLL_BACK, step, failed[1], failed[0])
    period = _period(rollout, step)
    where = _where(rollout, step)
    if elapsed_seconds < period:
        left = period - elapsed_seconds
        return Decision(Action.WAIT, step, f"{where}: analysing for {period}s", recheck=left)
    if not enough:
        return Decision(
            Action.WAIT, step, f"{where}: waiting for {max(analysis.min_requests, 1)} requests"
        )
    if rollout.strategy is Strategy.CANARY and step + 1 < len(rollout.steps):
        weight = rollout.steps[step + 1].weight
        return Decision(Action.ADVANCE, step + 1, f"{where} passed; next {weight} %")
    return Decision(Action.PROMOTE, step, f"{where} passed; promoting")


def _period(rollout: RolloutSpec, step: int) -> int:
    if rollout.strategy is Strategy.SHADOW:
        return rollout.duration_seconds
    return rollout.steps[step].pause_seconds


def _where(rollout: RolloutSpec, step: int) -> str:
    if rollout.strategy is Strategy.SHADOW:
        return f"shadow at {rollout.mirror_percent} %"
    return f"canary step {step + 1}/{len(rollout.steps)} at {rollout.steps[step].weight} %"


def _failed_threshold(rollout: RolloutSpec, measured: Measurement) -> tuple[str, str] | None:
    """The first threshold `measured` breaks, as (field, message), else None."""
    analysis: Analysis = rollout.analysis
    ratio = measured.errors / measured.requests
    if ratio > analysis.max_error_ratio:
        what = "copies failed" if rollout.strategy is Strategy.SHADOW else "requests failed"
        return (
            "maxErrorRatio",
            f"maxErrorRatio: {measured.errors} of {measured.requests} {what} "
            f"({ratio:.3f}), above {analysis.max_error_ratio}",
        )
    p99 = measured.p99_seconds
    if p99 is not None and p99 > analysis.max_p99_latency_seconds:
        return (
            "maxP99LatencySeconds",
            f"maxP99LatencySeconds: p99 {p99:.3f}s, above {analysis.max_p99_latency_seconds}s",
        )
    disagreement = measured.disagreement
    if (
        rollout.strategy is Strategy.SHADOW
        and disagreement is not None
        and disagreement > analysis.max_disagreement
    ):
        return (
            "maxDisagreement",
            f"maxDisagreement: mean |Δp| {disagreement:.4f} on a flag, "
            f"above {analysis.max_disagreement}",
        )
    return None


@dataclass(frozen=True)
class Split:
    stable: int  # pods of the serving version
    canary: int  # pods of the new version
    effective_weight: float  # percent of the Service's pods that are the canary's


def replica_split(weight: int, replicas: int) -> Split:
    """`replicas` pods shared so that the canary's share is nearest `weight` %.

    Both versions keep at least one pod (the canary would otherwise get nothing to
    measure, or the stable version nothing to fall back on), so `replicas` must be 0
    (the model is stopped) or at least 2.
    """
    if not 1 <= weight <= 99:
        raise ValueError(f"weight {weight} is outside 1..99")
    if replicas == 0:
        return Split(0, 0, 0.0)
    if replicas < 2:
        raise ValueError("a canary needs at least 2 replicas")
    nearest = math.floor(weight * replicas / 100 + 0.5)
    canary = min(max(nearest, 1), replicas - 1)
    return Split(replicas - canary, canary, 100 * canary / replicas)


def stable_selector(model: str) -> dict[str, str]:
    """The stable Service's selector while a canary runs: every version's pods."""
    return {MODEL_LABEL: model}


def version_service(
    owner_name: str, namespace: str, deployment_name: str, version_label: str
) -> dict:
    """A Service routing to one version's pods only, named like its Deployment.

    The canary Ingress and Shadow's copies reach the new version through it; the
    stable Ingress reaches the serving version through its own.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": deployment_name,
            "namespace": namespace,
            "labels": {MODEL_LABEL: owner_name, VERSION_LABEL: version_label},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {MODEL_LABEL: owner_name, VERSION_LABEL: version_label},
            "ports": [{"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}],
        },
    }


def weighted_by_ingress(class_name: str | None) -> bool:
    """Whether the Ingress controller splits by weight itself (NGINX's canary annotations)."""
    return class_name in NGINX_CLASSES


def canary_ingress(stable: Mapping[str, Any], canary_service: str, weight: int) -> dict:
    """The second Ingress NGINX needs for a canary: same host and path as the model's
    `stable` Ingress, routing `weight` % of its requests to `canary_service`."""
    if not 1 <= weight <= 99:
        raise ValueError(f"weight {weight} is outside 1..99")
    metadata = dict(stable["metadata"])
    metadata["name"] = f"{metadata['name']}-canary"
    annotations = dict(metadata.get("annotations") or {})
    annotations.update({NGINX_CANARY: "true", NGINX_CANARY_WEIGHT: str(weight)})
    metadata["annotations"] = annotations
    rules = [_with_backend(rule, canary_service) for rule in stable["spec"].get("rules") or []]
    return {**stable, "metadata": metadata, "spec": {**stable["spec"], "rules": rules}}


def routed_to(ingress: Mapping[str, Any], service: str) -> dict:
    """`ingress` with every path's backend on `service` (the stable Ingress during a
    canary routes to the serving version's own Service)."""
    rules = [_with_backend(rule, service) for rule in ingress["spec"].get("rules") or []]
    return {**ingress, "spec": {**ingress["spec"], "rules": rules}}


def _with_backend(rule: Mapping[str, Any], service: str) -> dict:
    http = rule.get("http") or {}
    paths = [
        {**path, "backend": {"service": {"name": service, "port": {"number": 80}}}}
        for path in http.get("paths") or []
    ]
    return {**rule, "http": {**http, "paths": paths}}


def shadow_settings(rollout: RolloutSpec | None, candidate_url: str | None) -> dict[str, Any]:
    """The serving version's shadow settings file (`batcomputer-server --shadow-config`,
    mounted from a ConfigMap): copies to the candidate while a Shadow rollout analyses,
    `{}` otherwise. A file rather than the environment, so shadowing starts and stops
    without restarting the pods that serve."""
    if rollout is None or rollout.strategy is not Strategy.SHADOW or not candidate_url:
        return {}
    return {"url": candidate_url, "percent": rollout.mirror_percent}


VERDICTS = {
    Action.WAIT: "Analysing",
    Action.ADVANCE: "Analysing",
    Action.PROMOTE: "Promoted",
    Action.ROLL_BACK: "RolledBack",
}
# The Stalled reason of a rolled-back version; the message names the failed threshold.
ANALYSIS_FAILED = "AnalysisFailed"


@dataclass(frozen=True)
class Progress:
    """Where a rollout of `candidate` stands; kept in status.rollout between passes."""

    candidate: str  # the version under analysis
    step: int  # index into the Canary steps; 0 for Shadow
    step_started: str  # RFC 3339: when this step began (its pause counts from then)


def recorded_progress(status_rollout: Any, candidate: str) -> Progress | None:
    """The progress status.rollout records for `candidate`, if any and readable.

    Status is the operator's own, but it may come from another operator version or a
    hand edit: anything unreadable starts the rollout over rather than guess a step.
    """
    if not isinstance(status_rollout, Mapping):
        return None
    step = status_rollout.get("stepIndex")
    started = status_rollout.get("stepStartedAt")
    if (
        status_rollout.get("candidateVersion") != candidate
        or isinstance(step, bool)
        or not isinstance(step, int)
        or step < 0
        or not isinstance(started, str)
    ):
        return None
    return Progress(candidate, step, started)


def after(progress: Progress, decision: Decision, now: str) -> Progress:
    """The progress once `decision` is carried out at `now`."""
    if decision.action is Action.ADVANCE:
        return Progress(progress.candidate, decision.step, now)
    return progress


def rollout_status(
    rollout: RolloutSpec, progress: Progress, decision: Decision, split: Split | None = None
) -> dict:
    """status.rollout: what `kubectl get bm` shows as strategy, step and weight; `split`:
    the Canary's pods as they are, whose share may differ from the weight asked for."""
    found: dict[str, Any] = {
        "strategy": rollout.strategy.value,
        "candidateVersion": progress.candidate,
        "stepIndex": progress.step,
        "stepStartedAt": progress.step_started,
        "verdict": VERDICTS[decision.action],
        "message": decision.message,
    }
    if rollout.strategy is Strategy.CANARY:
        found["step"] = f"{progress.step + 1}/{len(rollout.steps)}"
        found["weight"] = rollout.steps[progress.step].weight
        if split is not None:
            found["effectiveWeight"] = round(split.effective_weight, 1)
    elif rollout.strategy is Strategy.SHADOW:
        found["step"] = "shadow"
        found["mirrorPercent"] = rollout.mirror_percent
    if decision.failed_threshold is not None:
        found["failedThreshold"] = decision.failed_threshold
    return found
