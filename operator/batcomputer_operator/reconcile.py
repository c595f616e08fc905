"""One reconcile pass for one BatModel: a snapshot from the cache, the plan `decide`
makes of it, the plan's writes, and again until nothing is left to write.

Reads come from the cache; the API server is read only when a child's name turns
out to be held by an object no watch shows (a stranger's), which creating without
force reveals. Every object a write returns goes into the cache, so the next plan
and the next pass see it before its watch event arrives.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batcomputer_operator import analysis, naming, rollout, routing, status
from batcomputer_operator.cache import Cache
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.decide import Plan, Snapshot, Step, Write, decide
from batcomputer_operator.kube import Kube, KubeError
from batcomputer_operator.rollout import Measurement
from batcomputer_operator.rollout_spec import Strategy
from batcomputer_operator.scrape import ScrapeError, scrape
from batcomputer_operator.spec import SpecError, parse_spec

# How the API server refuses an apply without force to a name someone else holds: a
# field another manager set differently (409), or a second controller reference (422).
_TAKEN = (409, 422)
# A pass writes the Deployment, then the Service once the Deployment says so, then
# retires; a fourth plan with writes would mean two plans disagree with each other.
_MAX_PLANS = 4


@dataclass(frozen=True)
class Outcome:
    model: Mapping[str, Any]  # the BatModel the pass worked on, for posting events
    ready: bool
    stalled: bool
    settled: bool  # False: the status is left to a pass due shortly
    steps: tuple[Step, ...]
    recheck: float | None = None  # seconds until a rollout step wants another look


_log = logging.getLogger("batcomputer_operator")
# Each analysis' first scrape of every pod it measures in the current step, for the
# operator's lifetime (like the cache): a restart only makes a step wait longer.
_BASELINES = analysis.Baselines()


def measured(model: Mapping[str, Any], seen: Snapshot, now: str) -> Measurement | None:
    """What the candidate of `model`'s rollout did in its step so far: a Canary's from
    the metrics of its own pods that take traffic, a Shadow's from those of the serving
    version's pods, which send it copies and compare its answers. None when there is no
    such rollout or no pod to measure."""
    try:
        spec = parse_spec(model.get("spec") or {})
    except SpecError:
        spec = None
    metadata = model["metadata"]
    key = f"{metadata['namespace']}/{metadata['name']}"
    progress = (model.get("status") or {}).get("rollout") or {}
    if spec is not None and spec.rollout.strategy is Strategy.CANARY:
        measure, measured_pods = analysis.canary_measurement, seen.desired_holder
    elif (
        spec is not None
        and spec.rollout.strategy is Strategy.SHADOW
        and progress.get("candidateVersion") == spec.version
        and progress.get("verdict") == rollout.VERDICTS[rollout.Action.WAIT]
    ):
        serving = routing.serving_deployment(seen.backends, seen.pods, list(seen.deployments))
        measure, measured_pods = analysis.shadow_measurement, serving
    else:
        _BASELINES.forget(key)
        return None
    scrapes = {}
    for pod in routing.pods_of(measured_pods, seen.pods):
        uid, ip = pod["metadata"].get("uid"), routing.field(pod, "status", "podIP")
        if uid not in seen.backends or not ip:
            continue
        try:
            scrapes[uid] = scrape(ip)
        except ScrapeError as error:
            _log.warning("%s: pod not measured: %s", key, error)
    if not scrapes:
        return None
    step = (
        progress.get("candidateVersion"),
        progress.get("stepIndex"),
        progress.get("stepStartedAt"),
    )
    try:
        found = measure(_BASELINES.measure(key, step, scrapes))
    except analysis.MetricsError as error:
        _log.warning("%s: metrics unreadable: %s", key, error)
        return None
    return replace(found, counting_since=_BASELINES.counting_since(key, found.requests > 0, now))


def _wanted(model: Mapping[str, Any]) -> str | None:
    """The name of the desired version's Deployment, if the spec names a version."""
    try:
        version = parse_spec(model.get("spec") or {}).version
    except SpecError:
        return None
    return naming.deployment_name(model["metadata"]["name"], version)


def snapshot(cache: Cache, model: Mapping[str, Any]) -> Snapshot:
    """What the cache shows of `model`'s children."""
    namespace, name = model["metadata"]["namespace"], model["metadata"]["name"]
    wanted = _wanted(model)
    return Snapshot(
        deployments=tuple(cache.of_model("Deployment", namespace, name)),
        desired_holder=cache.get("Deployment", namespace, wanted) if wanted else None,
        service=cache.get("Service", namespace, name),
        ingress=cache.get("Ingress", namespace, name),
        pods=tuple(cache.of_model("Pod", namespace, name)),
        backends=routing.ready_backends(cache.of_model("EndpointSlice", namespace, name)),
        version_services=tuple(
            service
            for service in cache.of_model("Service", namespace, name)
            if service["metadata"]["name"] != name
        ),
        canary_ingress=cache.get("Ingress", namespace, f"{name}-canary"),
        shadow_configs=tuple(cache.of_model("ConfigMap", namespace, name)),
    )


def _unobserved(seen: Snapshot) -> bool:
    """The desired version's Deployment has a generation its controller has not observed."""
    deployment = seen.desired_holder
    if deployment is None:
        return False
    observed = (deployment.get("status") or {}).get("observedGeneration", 0)
    return observed < (deployment["metadata"].get("generation") or 0)


@dataclass
class _Executor:
    kube: Kube
    cache: Cache
    namespace: str
    # Children's names held by objects no watch shows, as read once: from then on the
    # snapshot includes them, and writes to those names use force.
    held: dict[tuple[str, str], dict] = field(default_factory=dict)

    def write(self, write: Write) -> bool:
        """Do `write`; False when a stranger's object holds the name (then in `held`)."""
        kind, name = write.kind, write.name
        if write.manifest is None:
            self.kube.delete(kind, self.namespace, name)
            self.cache.remove(kind, self.namespace, name)
            return True
        # What the cache does not show is created without force: a stranger's object
        # under the same name makes the API server refuse instead of handing it over.
        known = self.cache.get(kind, self.namespace, name) is not None
        force = known or (kind, name) in self.held
        try:
            self.cache.put(kind, self.kube.apply(write.manifest, force=force))
        except KubeError as error:
            if force or error.status not in _TAKEN:
                raise
            holder = self.kube.get(kind, self.namespace, name)
            if holder is None:
                raise
            self.held[kind, name] = holder
            return False
        return True

    def snapshot(self, model: Mapping[str, Any]) -> Snapshot:
        seen = snapshot(self.cache, model)
        for (kind, name), holder in self.held.items():
            if kind == "Service":
                seen = replace(seen, service=holder)
            elif kind == "Deployment" and name == _wanted(model):
                seen = replace(seen, desired_holder=holder)
        return seen


def reconcile(
    kube: Kube,
    cache: Cache,
    config: OperatorConfig,
    namespace: str,
    name: str,
    *,
    now: str,
    defer: bool = True,
) -> Outcome | None:
    """One pass; None when the BatModel is gone (or going), which ends its worker.

    `now` (RFC 3339) stamps conditions that change in this pass; `defer`: whether a
    status that is still under way may wait for the next pass.
    """
    model = cache.get("BatModel", namespace, name)
    if model is None or model["metadata"].get("deletionTimestamp"):
        return None
    executor = _Executor(kube, cache, namespace)
    seen = executor.snapshot(model)
    seen = replace(seen, measured=measured(model, seen, now))
    steps: list[Step] = []
    plan = Plan()
    for _ in range(_MAX_PLANS):
        plan = decide(model, seen, config, now)
        if not plan.writes:
            break
        try:
            for write in plan.writes:
                if not executor.write(write):
                    break
                steps.append(write.step)
        except KubeError as error:
            if error.lasting_reason is None:
                raise
            # e.g. requests above limits: valid for the CRD schema, refused for a Deployment.
            refused = status.Failure(error.lasting_reason, f"the API server refused: {error}")
            seen = replace(seen, refusal=refused)
            continue
        seen = executor.snapshot(model)
    # A pass still under way that has just written children, or whose Deployment's
    # controller has yet to observe what was written, leaves the status to the pass the
    # coming watch event causes: one status write per rollout step, not two or three.
    settled = plan.ready or plan.stalled or not defer or not (steps or _unobserved(seen))
    if settled and plan.status_changed:
        patched = kube.patch_status(namespace, name, plan.status)
        if patched is not None:
            cache.put("BatModel", patched)
    return Outcome(
        model, plan.ready, plan.stalled, settled, (*steps, *plan.transitions), plan.recheck
    )
