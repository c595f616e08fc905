"""Reconcile decisions as a pure function: a BatModel and what the cluster shows of it
become a plan of writes, a status and the Events worth posting.

Blue/green: the desired version gets its own Deployment; the Service keeps
routing to the version it serves until the desired one has every replica
updated and ready; only then does the Service switch, and once its endpoints
list the new pods the other versions' Deployments go. A version that never
gets ready never gets traffic.

Canary and Shadow compare the desired version with the one the Service serves before
it takes over (`analysed`); with nothing to compare it with, a first rollout goes
blue/green.

A plan is executed and decided again on what the API server returned, until a
plan has nothing left to write; only then does its status count. A Deployment
the plan writes counts as not rolled out yet, so traffic never moves on the
strength of a Deployment status that is about to change.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from batcomputer_operator import analysed, diff, manifests, naming, pinning, routing, status
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.plan import (
    Observer,
    Plan,
    Rollout,
    Snapshot,
    Step,
    Write,
    ingress_writes,
    owned,
    owner_of,
    retired,
    shadow_settings_writes,
    unsplit,
    version_of,
)
from batcomputer_operator.rollout_spec import Strategy
from batcomputer_operator.spec import BatModelSpec, SpecError, parse_spec

__all__ = ["Plan", "Snapshot", "Step", "Write", "decide"]


def _foreign(child: Mapping[str, Any] | None, owner: manifests.Owner) -> bool:
    """A child under the model's name that another controller owns: never taken over."""
    refs = (child or {}).get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") != owner.uid for ref in refs)


def decide(model: Mapping[str, Any], snapshot: Snapshot, config: OperatorConfig, now: str) -> Plan:
    """The next plan for `model`. `now` (RFC 3339) stamps conditions that change."""
    owner = owner_of(model)
    try:
        spec = parse_spec(model.get("spec") or {})
    except SpecError as error:
        return _settle(model, _observed_invalid(model, error), now)
    deployments = [d for d in snapshot.deployments if owned(d, owner)]
    serving = routing.serving_deployment(snapshot.backends, snapshot.pods, deployments)
    observe = Observer(model, owner, spec)
    if snapshot.refusal is not None:
        return _settle(model, observe(snapshot.refusal, serving=serving), now)
    refused = pinning.refusal(pinning.pinning(spec), config.require_pinned_bundles)
    if refused is not None:  # nothing is deployed for it; the serving version carries on
        return _settle(
            model, observe(status.Failure(pinning.UNPINNED, refused), serving=serving), now
        )
    conflict = _conflict(owner, snapshot.service, snapshot.desired_holder)
    if conflict is not None:
        return _settle(model, observe(conflict), now)
    if spec.rollout.strategy is not Strategy.BLUE_GREEN:
        against = analysed.compared(model, snapshot, observe, deployments, now=now)
        if against is not None:
            stepped = analysed.planned(against, snapshot, config, observe, deployments, now=now)
            return _settle(model, stepped.observed, now, stepped)
    rollout = _roll(snapshot, config, observe, deployments, serving)
    return _settle(model, rollout.observed, now, rollout)


def _roll(
    snapshot: Snapshot,
    config: OperatorConfig,
    observe: Observer,
    deployments: list[Mapping[str, Any]],
    serving: Mapping[str, Any] | None,
) -> Rollout:
    """The writes of a rollout step, and what the pass saw."""
    owner, spec = observe.owner, observe.spec
    writes: list[Write] = []
    desired_manifest = manifests.deployment(owner, spec, config)
    live = snapshot.desired_holder
    desired: Mapping[str, Any] = live or desired_manifest
    if live is None or diff.differs(desired_manifest, live):
        step = _deployment_step(desired_manifest, live, spec)
        writes.append(
            Write("Deployment", desired_manifest["metadata"]["name"], desired_manifest, step)
        )
        desired = _pending(desired_manifest, live)
    by_name = {d["metadata"]["name"]: d for d in deployments}
    by_name[desired["metadata"]["name"]] = desired
    deployments = list(by_name.values())
    target = routing.route_target(desired, routing.routed_deployment(snapshot.service, deployments))
    service = manifests.service(owner, version_of(target))
    if snapshot.service is None or diff.differs(service, snapshot.service):
        step = _service_step(owner.name, version_of(target), snapshot.service)
        # A Service not seen yet is claimed first: should a stranger hold its name, the
        # model stalls before it has created anything.
        writes.insert(
            0 if snapshot.service is None else len(writes),
            Write("Service", owner.name, service, step),
        )
    retiring = routing.to_retire(deployments, [desired, target, serving])
    writes.extend(retired(deployments, [desired, target, serving]))
    writes.extend(ingress_writes(snapshot, owner, spec, config, version_of(target)))
    writes.extend(unsplit(snapshot, owner))
    kept = {version_of(d) for d in deployments} - {version_of(d) for d in retiring}
    writes.extend(shadow_settings_writes(snapshot, owner, kept))
    seen = observe(
        status.rollout_failure(desired, snapshot.pods),
        serving=serving,
        desired=desired,
        selected=target is desired,
        answering=routing.answering_pods(snapshot.backends, snapshot.pods, desired),
    )
    return Rollout(seen, tuple(writes))


def _pending(manifest: dict, live: Mapping[str, Any] | None) -> dict:
    """The Deployment as it stands once the write lands, not yet rolled out: the
    controller has yet to observe the new generation."""
    status_of = dict((live or {}).get("status") or {})
    status_of["observedGeneration"] = -1
    return {**manifest, "status": status_of}


def _deployment_step(manifest: dict, live: Mapping[str, Any] | None, spec: BatModelSpec) -> Step:
    name = manifest["metadata"]["name"]
    if live is None:
        return Step("Deploying", f"created Deployment {name} for version {spec.version}")
    if (live.get("spec") or {}).get("replicas") != spec.replicas:
        return Step("Scaled", f"scaled Deployment {name} to {spec.replicas} replicas")
    return Step("Updated", f"updated Deployment {name} of version {spec.version}")


def _service_step(name: str, version: str, live: Mapping[str, Any] | None) -> Step:
    if live is None:
        return Step("ServiceCreated", f"created Service {name} routing to version {version}")
    before = ((live.get("metadata") or {}).get("annotations") or {}).get(naming.SERVING_ANNOTATION)
    if before != version:
        return Step("Switched", f"Service {name} switched from version {before} to {version}")
    return Step("Repaired", f"restored Service {name} routing to version {version}")


def _conflict(
    owner: manifests.Owner,
    service: Mapping[str, Any] | None,
    deployment: Mapping[str, Any] | None,
) -> status.Failure | None:
    for kind, child in (("Service", service), ("Deployment", deployment)):
        if child is not None and _foreign(child, owner):
            name = child["metadata"]["name"]
            return status.Failure(
                "NameConflict", f"{kind} {name} already belongs to another controller"
            )
    return None


def _observed_invalid(model: Mapping[str, Any], error: SpecError) -> status.Observed:
    raw = model.get("spec") or {}
    version = raw.get("version")
    return status.Observed(
        generation=model["metadata"].get("generation", 0),
        desired_version=version if isinstance(version, str) else None,
        replicas=0,
        ready_replicas=0,
        complete=False,
        answering=0,
        serving_version=(model.get("status") or {}).get("servingVersion"),
        failure=status.Failure("InvalidSpec", str(error)),
        url=manifests.service_url(owner_of(model)),
        ingress_path=None,
    )


def _settle(
    model: Mapping[str, Any], seen: status.Observed, now: str, rollout: Rollout | None = None
) -> Plan:
    live_status = model.get("status") or {}
    previous = live_status.get("conditions") or []
    new = status.build_status(seen, previous, now)
    conditions = {c["type"]: c["status"] == "True" for c in new["conditions"]}
    return Plan(
        writes=rollout.writes if rollout else (),
        transitions=_transitions(previous, new["conditions"]),
        status=new,
        status_changed=status.status_differs(new, live_status),
        ready=conditions["Ready"],
        stalled=conditions["Stalled"],
        recheck=rollout.recheck if rollout else None,
    )


def _transitions(previous: Sequence[Mapping[str, Any]], conditions: list[dict]) -> tuple[Step, ...]:
    """An Event when Ready or Stalled turns True, or stays True for another reason."""
    was = {c.get("type"): (c.get("status"), c.get("reason")) for c in previous}
    steps = []
    for condition in conditions:
        now = (condition["status"], condition["reason"])
        if condition["status"] != "True" or was.get(condition["type"]) == now:
            continue
        if condition["type"] == "Stalled":
            steps.append(Step(condition["reason"], condition["message"], warning=True))
        elif condition["type"] == "Ready":
            steps.append(Step("Ready", condition["message"]))
    return tuple(steps)
