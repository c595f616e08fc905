"""Canary and Shadow as pure plans: the spec's version against the version the Service
serves, analysed before it takes over. With nothing to compare it with (a first
rollout, or once the candidate serves), `compared` finds no such rollout and the
BatModel rolls out blue/green (`decide`).

A rollout's progress lives in `status.rollout` (`rollout.Progress`): each run reads it
back, analyses, promotes or rolls back (`CanaryRun`, `ShadowRun`), and the verdict it
records is carried out in the pass after.
"""

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from batcomputer_operator import canary, diff, manifests, naming, rollout, routing, shadow, status
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.plan import (
    Observer,
    Rollout,
    Snapshot,
    Step,
    Write,
    changed,
    ingress_writes,
    retired,
    shadow_settings_writes,
    unsplit,
    version_of,
)
from batcomputer_operator.rollout_spec import Strategy

# How often a Canary step's or a Shadow's analysis looks at the metrics: a candidate
# that fails a threshold is rolled back within one interval.
ANALYSIS_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class Compared:
    """A rollout of the spec's version against `serving`, the version the Service serves."""

    serving: Mapping[str, Any]
    serving_version: str
    progress: rollout.Progress
    recorded: Mapping[str, Any] | None  # status.rollout of this very rollout, if any


def compared(
    model: Mapping[str, Any],
    snapshot: Snapshot,
    observe: Observer,
    deployments: list[Mapping[str, Any]],
    *,
    now: str,
) -> Compared | None:
    """The spec's version against the version the Service serves; None when there is
    none to compare it with (a first rollout, or once the candidate serves), which rolls
    out as blue/green."""
    spec = observe.spec
    serving_version = _annotated_version(snapshot.service)
    serving = next((d for d in deployments if version_of(d) == serving_version), None)
    if serving is None or serving_version is None or serving_version == spec.version:
        return None
    recorded = (model.get("status") or {}).get("rollout")
    progress = rollout.recorded_progress(recorded, spec.version)
    steps = len(spec.rollout.steps) if spec.rollout.strategy is Strategy.CANARY else 1
    if progress is not None and (
        progress.step >= steps or recorded.get("strategy") != spec.rollout.strategy.value
    ):
        progress = None  # the steps or the strategy changed under the rollout: start over
    if progress is None:
        return Compared(serving, serving_version, rollout.Progress(spec.version, 0, now), None)
    return Compared(serving, serving_version, progress, recorded)


def planned(
    against: Compared,
    snapshot: Snapshot,
    config: OperatorConfig,
    observe: Observer,
    deployments: list[Mapping[str, Any]],
    *,
    now: str,
) -> Rollout:
    """The writes and status of the rollout `against` describes, as its recorded verdict
    has it: rolled back, promoting, or still under analysis."""
    run_of = ShadowRun if observe.spec.rollout.strategy is Strategy.SHADOW else CanaryRun
    run = run_of(snapshot, config, observe, deployments, against.serving, against.serving_version)
    recorded = against.recorded
    verdict = (recorded or {}).get("verdict")
    if recorded is not None and verdict == rollout.VERDICTS[rollout.Action.ROLL_BACK]:
        return run.rolled_back(recorded)
    if recorded is not None and verdict == rollout.VERDICTS[rollout.Action.PROMOTE]:
        return run.promoting(recorded)
    return run.analysing(against.progress, now)


def _annotated_version(service: Mapping[str, Any] | None) -> str | None:
    annotations = routing.field(service, "metadata", "annotations") or {}
    return annotations.get(naming.SERVING_ANNOTATION)


def _seconds(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339).timestamp()


@dataclass(frozen=True)
class CanaryRun:
    snapshot: Snapshot
    config: OperatorConfig
    observe: Observer
    deployments: list[Mapping[str, Any]]
    serving: Mapping[str, Any]
    serving_version: str

    def analysing(self, progress: rollout.Progress, now: str) -> Rollout:
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        steps = spec.rollout.steps
        weight = steps[progress.step].weight
        split = rollout.replica_split(weight, spec.replicas)
        live = snapshot.desired_holder
        ready = (
            routing.rollout_complete(live)
            and routing.field(live, "spec", "replicas") == split.canary
        )
        # A candidate that cannot get ready gives its share back: the serving version
        # alone behind the Service at every replica, until the candidate is fixed.
        failure = status.rollout_failure(live, snapshot.pods)
        widen = failure is None and (ready or _widened(snapshot.service))
        children = canary.step_children(owner, spec, self.config, self.serving, weight, widen=widen)
        serving = canary.rescaled(self.serving, spec.replicas) if failure else children.serving
        where = f"canary step {progress.step + 1}/{len(steps)} at {weight} %"
        writes = [
            *changed(
                "Service",
                children.service,
                snapshot.service,
                Step(
                    "Widened",
                    f"Service {owner.name} routes to versions {self.serving_version} and "
                    f"{spec.version} by their pods, {children.split.effective_weight:.0f} % "
                    f"to {spec.version}",
                )
                if children.widened
                else Step("Repaired", f"restored Service {owner.name}"),
            ),
            *changed(
                "Deployment",
                children.candidate,
                live,
                Step("CanaryStep", f"{where}: {split.canary} pods of version {spec.version}"),
            ),
            *changed(
                "Deployment",
                serving,
                self.serving,
                Step(
                    "CanaryStep",
                    f"{where}: {serving['spec']['replicas']} pods of version "
                    f"{self.serving_version}",
                ),
            ),
            *self._retired(children.candidate),
            *self._ingress(children, weight),
            *shadow_settings_writes(snapshot, owner, {self.serving_version, spec.version}),
        ]
        in_place = not writes and children.widened and ready
        recheck = None
        if in_place:
            elapsed = _seconds(now) - _seconds(progress.step_started)
            measured = snapshot.measured or rollout.Measurement()
            decision = rollout.next_action(spec.rollout, progress.step, elapsed, measured)
            recheck = min(decision.recheck or ANALYSIS_INTERVAL_SECONDS, ANALYSIS_INTERVAL_SECONDS)
        else:
            decision = rollout.Decision(
                rollout.Action.WAIT,
                progress.step,
                f"{where}: waiting for {split.canary} pods of version {spec.version} "
                "to take traffic",
            )
        found = rollout.rollout_status(
            spec.rollout, rollout.after(progress, decision, now), decision, split
        )
        if decision.action is rollout.Action.ROLL_BACK:
            # Traffic moves back in the pass the recorded verdict brings: a plan decided
            # again within this pass still reads the verdict before it.
            return replace(self.rolled_back(found), writes=(), recheck=0.0)
        if decision.action is not rollout.Action.WAIT:
            # The next step's writes come in the next pass, which reads this one's status;
            # the operator's own status write brings no watch event it has not seen.
            recheck = 0.0
        seen = self.observe(failure, serving=self.serving, desired=live)
        return Rollout(replace(seen, rollout=found), tuple(writes), recheck)

    def promoting(self, recorded: Mapping[str, Any]) -> Rollout:
        """The candidate at every replica beside the serving version, then the Service on
        the candidate alone; once it is, blue/green retires the serving version."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        candidate = manifests.deployment(owner, spec, self.config)
        live = snapshot.desired_holder
        complete = routing.rollout_complete(live) and not diff.differs(candidate, live)
        service = (
            manifests.service(owner, spec.version)
            if complete
            else canary.widened_service(owner, self.serving_version)
        )
        writes = [
            *changed(
                "Deployment",
                candidate,
                live,
                Step(
                    "Promoting",
                    f"scaled Deployment {candidate['metadata']['name']} of version "
                    f"{spec.version} to {spec.replicas} replicas",
                ),
            ),
            *changed(
                "Service",
                service,
                snapshot.service,
                Step(
                    "Promoted",
                    f"Service {owner.name} switched from version "
                    f"{self.serving_version} to {spec.version} after its canary analysis",
                ),
            ),
            *ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
            *unsplit(snapshot, owner),
        ]
        seen = self.observe(
            status.rollout_failure(live, snapshot.pods), serving=self.serving, desired=live
        )
        return Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

    def rolled_back(self, recorded: Mapping[str, Any]) -> Rollout:
        """The serving version alone at every replica; the candidate goes. Stalled until
        the spec names another version."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        writes = [
            *changed(
                "Service",
                manifests.service(owner, self.serving_version),
                snapshot.service,
                Step(
                    "RolledBack",
                    f"Service {owner.name} routes to version {self.serving_version} alone again",
                ),
            ),
            *changed(
                "Deployment",
                canary.rescaled(self.serving, spec.replicas),
                self.serving,
                Step(
                    "RolledBack",
                    f"scaled version {self.serving_version} back to {spec.replicas} replicas",
                ),
            ),
            *ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
            *unsplit(snapshot, owner),
            *self._retired(self.serving),
        ]
        message = f"version {spec.version} rolled back: {recorded.get('message', '')}"
        failure = status.Failure(rollout.ANALYSIS_FAILED, message)
        seen = self.observe(failure, serving=self.serving)
        return Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

    def _ingress(self, children: canary.StepChildren, weight: int) -> list[Write]:
        """An NGINX Ingress splits by `weight` itself: the model's Ingress routes to the
        serving version's own Service, a canary Ingress sends `weight` % to the
        candidate's. Any other Ingress routes to the stable Service, split by pods."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        stable = manifests.ingress(owner, spec, self.config, self.serving_version)
        if (
            stable is None
            or not children.widened
            or not rollout.weighted_by_ingress(stable["spec"].get("ingressClassName"))
        ):
            return [
                *ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
                *unsplit(snapshot, owner),
            ]
        serving_service = canary.version_service(owner, self.serving_version)
        candidate_service = canary.version_service(owner, spec.version)
        stable = rollout.routed_to(stable, serving_service["metadata"]["name"])
        weighted = rollout.canary_ingress(stable, candidate_service["metadata"]["name"], weight)
        services = {s["metadata"]["name"]: s for s in snapshot.version_services}
        routed = f"by the Ingress: {weight} % to version {spec.version}"
        return [
            *(
                write
                for service in (serving_service, candidate_service)
                for write in changed(
                    "Service",
                    service,
                    services.get(service["metadata"]["name"]),
                    Step("VersionService", f"Service {service['metadata']['name']} for {routed}"),
                )
            ),
            *changed("Ingress", stable, snapshot.ingress, Step("IngressSplit", routed)),
            *changed("Ingress", weighted, snapshot.canary_ingress, Step("IngressSplit", routed)),
        ]

    def _retired(self, keep: Mapping[str, Any] | None) -> list[Write]:
        return retired(self.deployments, [self.serving, keep])


@dataclass(frozen=True)
class ShadowRun:
    """The candidate at `spec.replicas` behind its own Service, which only the serving
    version's copies reach; the stable Service and the Ingress stay on the serving
    version, untouched (see `shadow`)."""

    snapshot: Snapshot
    config: OperatorConfig
    observe: Observer
    deployments: list[Mapping[str, Any]]
    serving: Mapping[str, Any]
    serving_version: str

    def analysing(self, progress: rollout.Progress, now: str) -> Rollout:
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        live = snapshot.desired_holder
        failure = status.rollout_failure(live, snapshot.pods)
        settings = shadow.copying(spec.rollout, self._candidate_service_live())
        copies = shadow.settings_of(self._serving_config()) == settings
        # Copies go to the candidate once every pod of it is ready, so none fails for
        # want of a pod; one that cannot get ready gets none, and is Stalled for it.
        copying = failure is None and bool(settings) and (routing.rollout_complete(live) or copies)
        where = f"shadow at {spec.rollout.mirror_percent} %"
        candidate = manifests.deployment(owner, spec, self.config)
        writes = [
            *changed(
                "Deployment",
                candidate,
                live,
                Step(
                    "ShadowCandidate",
                    f"{where}: {spec.replicas} pods of version {spec.version}, "
                    "answering copies only",
                ),
            ),
            *self._candidate_service(),
            *self._stable(Step("Repaired", f"restored Service {owner.name}")),
            *self._retired(candidate),
            *shadow_settings_writes(
                snapshot,
                owner,
                {self.serving_version, spec.version},
                {self.serving_version: settings} if copying else {},
            ),
        ]
        recheck = None
        if not writes and copying:
            measured = snapshot.measured or rollout.Measurement()
            since = measured.counting_since
            elapsed = _seconds(now) - _seconds(since) if since else 0.0
            decision = rollout.next_action(spec.rollout, 0, elapsed, measured)
            recheck = min(decision.recheck or ANALYSIS_INTERVAL_SECONDS, ANALYSIS_INTERVAL_SECONDS)
        else:
            decision = rollout.Decision(
                rollout.Action.WAIT,
                0,
                f"{where}: waiting for {spec.replicas} pods of version {spec.version} "
                "to get copies",
            )
        found = rollout.rollout_status(spec.rollout, progress, decision)
        if decision.action is rollout.Action.ROLL_BACK:
            # As a Canary's: the candidate goes in the pass the recorded verdict brings.
            return replace(self.rolled_back(found), writes=(), recheck=0.0)
        if decision.action is rollout.Action.PROMOTE:
            recheck = 0.0
        seen = self.observe(failure, serving=self.serving, desired=live)
        return Rollout(replace(seen, rollout=found), tuple(writes), recheck)

    def promoting(self, recorded: Mapping[str, Any]) -> Rollout:
        """Copying stops and the Service switches to the candidate, already at every
        replica; once it serves, blue/green retires the serving version and the
        candidate's own Service."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        live = snapshot.desired_holder
        candidate = manifests.deployment(owner, spec, self.config)
        complete = routing.rollout_complete(live) and not diff.differs(candidate, live)
        writes = [
            *shadow_settings_writes(snapshot, owner, {self.serving_version, spec.version}),
            *changed(
                "Deployment",
                candidate,
                live,
                Step("Promoting", f"restored Deployment {candidate['metadata']['name']}"),
            ),
            *changed(
                "Service",
                manifests.service(owner, spec.version if complete else self.serving_version),
                snapshot.service,
                Step(
                    "Promoted",
                    f"Service {owner.name} switched from version {self.serving_version} "
                    f"to {spec.version} after its shadow analysis",
                ),
            ),
            *ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
        ]
        seen = self.observe(
            status.rollout_failure(live, snapshot.pods), serving=self.serving, desired=live
        )
        return Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

    def rolled_back(self, recorded: Mapping[str, Any]) -> Rollout:
        """Copying stops, the candidate and its Service go; the serving version, which
        alone answered throughout, carries on. Stalled until the spec names another
        version."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        writes = [
            *shadow_settings_writes(snapshot, owner, {self.serving_version}),
            *self._stable(
                Step("RolledBack", f"Service {owner.name} routes to version {self.serving_version}")
            ),
            *unsplit(snapshot, owner),
            *self._retired(None),
        ]
        message = f"version {spec.version} rolled back: {recorded.get('message', '')}"
        failure = status.Failure(rollout.ANALYSIS_FAILED, message)
        seen = self.observe(failure, serving=self.serving)
        return Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

    def _serving_config(self) -> Mapping[str, Any] | None:
        name = naming.shadow_config_name(self.serving["metadata"]["name"])
        return next(
            (c for c in self.snapshot.shadow_configs if c["metadata"]["name"] == name), None
        )

    def _candidate_service(self) -> list[Write]:
        """The candidate's own Service, where the copies go; whatever other version
        Services a Canary left go."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        service = canary.version_service(owner, spec.version)
        name = service["metadata"]["name"]
        live = self._candidate_service_live()
        step = Step("VersionService", f"Service {name} for the copies to version {spec.version}")
        return [*changed("Service", service, live, step), *unsplit(snapshot, owner, keep=name)]

    def _candidate_service_live(self) -> Mapping[str, Any] | None:
        owner, spec = self.observe.owner, self.observe.spec
        name = naming.deployment_name(owner.name, spec.version)
        return next(
            (s for s in self.snapshot.version_services if s["metadata"]["name"] == name), None
        )

    def _stable(self, step: Step) -> list[Write]:
        """The stable Service and the Ingress on the serving version alone."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        return [
            *changed(
                "Service", manifests.service(owner, self.serving_version), snapshot.service, step
            ),
            *ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
        ]

    def _retired(self, keep: Mapping[str, Any] | None) -> list[Write]:
        return retired(self.deployments, [self.serving, keep])


def _widened(service: Mapping[str, Any] | None) -> bool:
    """Whether the Service selects every version's pods (by the model label alone)."""
    selector = routing.field(service, "spec", "selector") or {}
    return bool(selector) and naming.VERSION_LABEL not in selector
