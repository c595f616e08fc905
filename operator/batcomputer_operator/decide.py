"""Reconcile decisions as a pure function: a BatModel and what the cluster shows of it
become a plan of writes, a status and the Events worth posting.

Blue/green: the desired version gets its own Deployment; the Service keeps
routing to the version it serves until the desired one has every replica
updated and ready; only then does the Service switch, and once its endpoints
list the new pods the other versions' Deployments go. A version that never
gets ready never gets traffic.

Canary and Shadow compare the desired version with the one the Service serves before
it takes over (`_CanaryRun`, `_ShadowRun`); with nothing to compare it with, a first
rollout goes blue/green.

A plan is executed and decided again on what the API server returned, until a
plan has nothing left to write; only then does its status count. A Deployment
the plan writes counts as not rolled out yet, so traffic never moves on the
strength of a Deployment status that is about to change.
"""

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from batcomputer_operator import (
    canary,
    diff,
    manifests,
    naming,
    pinning,
    rollout,
    routing,
    shadow,
    status,
)
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.rollout_spec import Strategy
from batcomputer_operator.spec import BatModelSpec, SpecError, parse_spec


@dataclass(frozen=True)
class Snapshot:
    """What the cluster shows of one BatModel's children.

    `deployments`: those labelled with the model's name; `desired_holder`: whatever
    holds the desired version's Deployment name (maybe a stranger's object);
    `backends`: uids of the pods the Service's endpoints list as ready;
    `refusal`: the API server refused a write and retrying it cannot help;
    `measured`: what the candidate of a Canary or Shadow did in its current step, from
    the pods' metrics (None: not measured); `version_services` and `canary_ingress`: what
    a Canary behind an NGINX Ingress or a Shadow adds (the model's Services other than
    the stable one, and the `<model>-canary` Ingress); `shadow_configs`: the model's
    shadow settings ConfigMaps.
    """

    deployments: tuple[Mapping[str, Any], ...] = ()
    desired_holder: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    ingress: Mapping[str, Any] | None = None
    pods: tuple[Mapping[str, Any], ...] = ()
    backends: frozenset[str] = frozenset()
    refusal: status.Failure | None = None
    measured: rollout.Measurement | None = None
    version_services: tuple[Mapping[str, Any], ...] = ()
    canary_ingress: Mapping[str, Any] | None = None
    shadow_configs: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Step:
    """Something worth a Kubernetes Event on the BatModel."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Write:
    """One write to a child in the model's namespace, and how to tell it."""

    kind: str
    name: str
    manifest: dict | None  # a complete manifest to server-side apply; None: delete
    step: Step


@dataclass(frozen=True)
class Plan:
    writes: tuple[Write, ...] = ()  # in order
    transitions: tuple[Step, ...] = ()  # Ready or Stalled turning True, told
    status: dict[str, Any] = field(default_factory=dict)  # the whole status, as built
    status_changed: bool = False
    ready: bool = False
    stalled: bool = False
    recheck: float | None = None  # seconds until a rollout step wants another look


def owner_of(model: Mapping[str, Any]) -> manifests.Owner:
    metadata = model["metadata"]
    return manifests.Owner(metadata["name"], metadata["namespace"], metadata["uid"])


def owned(child: Mapping[str, Any] | None, owner: manifests.Owner) -> bool:
    refs = (child or {}).get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)


def _foreign(child: Mapping[str, Any] | None, owner: manifests.Owner) -> bool:
    """A child under the model's name that another controller owns: never taken over."""
    refs = (child or {}).get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") != owner.uid for ref in refs)


def version_of(deployment: Mapping[str, Any]) -> str:
    metadata = deployment.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return annotations.get(naming.VERSION_ANNOTATION) or labels.get(naming.VERSION_LABEL, "?")


def decide(model: Mapping[str, Any], snapshot: Snapshot, config: OperatorConfig, now: str) -> Plan:
    """The next plan for `model`. `now` (RFC 3339) stamps conditions that change."""
    owner = owner_of(model)
    try:
        spec = parse_spec(model.get("spec") or {})
    except SpecError as error:
        return _settle(model, _observed_invalid(model, error), now)
    deployments = [d for d in snapshot.deployments if owned(d, owner)]
    serving = routing.serving_deployment(snapshot.backends, snapshot.pods, deployments)
    observe = _Observer(model, owner, spec)
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
        compared = _compared(model, snapshot, observe, deployments, now=now)
        if compared is not None:
            stepped = _analysed(compared, snapshot, config, observe, deployments, now=now)
            return _settle(model, stepped.observed, now, stepped)
    rollout = _roll(snapshot, config, observe, deployments, serving)
    return _settle(model, rollout.observed, now, rollout)


@dataclass(frozen=True)
class _Rollout:
    observed: status.Observed
    writes: tuple[Write, ...]
    recheck: float | None = None


def _roll(
    snapshot: Snapshot,
    config: OperatorConfig,
    observe: "_Observer",
    deployments: list[Mapping[str, Any]],
    serving: Mapping[str, Any] | None,
) -> _Rollout:
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
    writes.extend(_retired(deployments, [desired, target, serving]))
    writes.extend(_ingress_writes(snapshot, owner, spec, config, version_of(target)))
    writes.extend(_unsplit(snapshot, owner))
    kept = {version_of(d) for d in deployments} - {version_of(d) for d in retiring}
    writes.extend(_shadow_settings(snapshot, owner, kept))
    seen = observe(
        status.rollout_failure(desired, snapshot.pods),
        serving=serving,
        desired=desired,
        selected=target is desired,
        answering=routing.answering_pods(snapshot.backends, snapshot.pods, desired),
    )
    return _Rollout(seen, tuple(writes))


def _ingress_writes(
    snapshot: Snapshot,
    owner: manifests.Owner,
    spec: BatModelSpec,
    config: OperatorConfig,
    version: str,
) -> list[Write]:
    ingress = manifests.ingress(owner, spec, config, version)
    if ingress is None:
        if snapshot.ingress is not None and owned(snapshot.ingress, owner):
            return [
                Write(
                    "Ingress",
                    owner.name,
                    None,
                    Step("IngressDeleted", f"deleted Ingress {owner.name}"),
                )
            ]
        return []
    if snapshot.ingress is None or diff.differs(ingress, snapshot.ingress):
        path = spec.ingress.path if spec.ingress else ""
        step = Step("IngressApplied", f"Ingress {owner.name} serves {path}")
        return [Write("Ingress", owner.name, ingress, step)]
    return []


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


@dataclass(frozen=True)
class _Observer:
    model: Mapping[str, Any]
    owner: manifests.Owner
    spec: BatModelSpec

    def __call__(
        self,
        failure: status.Failure | None,
        *,
        serving: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
        selected: bool = False,
        answering: int = 0,
    ) -> status.Observed:
        """`serving`: the Deployment the Service's endpoints route to; `selected`: whether
        the Service's selector points at `desired`."""
        return status.Observed(
            generation=self.model["metadata"].get("generation", 0),
            desired_version=self.spec.version,
            replicas=self.spec.replicas,
            ready_replicas=routing.ready_replicas(desired),
            complete=selected and routing.rollout_complete(desired),
            answering=answering,
            serving_version=version_of(serving) if serving is not None else None,
            failure=failure,
            url=manifests.service_url(self.owner),
            ingress_path=self.spec.ingress.path if self.spec.ingress else None,
            pinning=pinning.pinning(self.spec),
        )


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
    model: Mapping[str, Any], seen: status.Observed, now: str, rollout: _Rollout | None = None
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


# How often a Canary step's or a Shadow's analysis looks at the metrics: a candidate
# that fails a threshold is rolled back within one interval.
ANALYSIS_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class _Compared:
    """A rollout of the spec's version against `serving`, the version the Service serves."""

    serving: Mapping[str, Any]
    serving_version: str
    progress: rollout.Progress
    recorded: Mapping[str, Any] | None  # status.rollout of this very rollout, if any


def _compared(
    model: Mapping[str, Any],
    snapshot: Snapshot,
    observe: "_Observer",
    deployments: list[Mapping[str, Any]],
    *,
    now: str,
) -> _Compared | None:
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
        return _Compared(serving, serving_version, rollout.Progress(spec.version, 0, now), None)
    return _Compared(serving, serving_version, progress, recorded)


def _analysed(
    compared: _Compared,
    snapshot: Snapshot,
    config: OperatorConfig,
    observe: "_Observer",
    deployments: list[Mapping[str, Any]],
    *,
    now: str,
) -> _Rollout:
    run_of = _ShadowRun if observe.spec.rollout.strategy is Strategy.SHADOW else _CanaryRun
    run = run_of(snapshot, config, observe, deployments, compared.serving, compared.serving_version)
    verdict = (compared.recorded or {}).get("verdict")
    if compared.recorded is not None and verdict == rollout.VERDICTS[rollout.Action.ROLL_BACK]:
        return run.rolled_back(compared.recorded)
    if compared.recorded is not None and verdict == rollout.VERDICTS[rollout.Action.PROMOTE]:
        return run.promoting(compared.recorded)
    return run.analysing(compared.progress, now)


def _annotated_version(service: Mapping[str, Any] | None) -> str | None:
    annotations = routing.field(service, "metadata", "annotations") or {}
    return annotations.get(naming.SERVING_ANNOTATION)


def _seconds(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339).timestamp()


@dataclass(frozen=True)
class _CanaryRun:
    snapshot: Snapshot
    config: OperatorConfig
    observe: "_Observer"
    deployments: list[Mapping[str, Any]]
    serving: Mapping[str, Any]
    serving_version: str

    def analysing(self, progress: rollout.Progress, now: str) -> _Rollout:
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
            *_changed(
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
            *_changed(
                "Deployment",
                children.candidate,
                live,
                Step("CanaryStep", f"{where}: {split.canary} pods of version {spec.version}"),
            ),
            *_changed(
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
            *_shadow_settings(snapshot, owner, {self.serving_version, spec.version}),
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
        return _Rollout(replace(seen, rollout=found), tuple(writes), recheck)

    def promoting(self, recorded: Mapping[str, Any]) -> _Rollout:
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
            *_changed(
                "Deployment",
                candidate,
                live,
                Step(
                    "Promoting",
                    f"scaled Deployment {candidate['metadata']['name']} of version "
                    f"{spec.version} to {spec.replicas} replicas",
                ),
            ),
            *_changed(
                "Service",
                service,
                snapshot.service,
                Step(
                    "Promoted",
                    f"Service {owner.name} switched from version "
                    f"{self.serving_version} to {spec.version} after its canary analysis",
                ),
            ),
            *_ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
            *_unsplit(snapshot, owner),
        ]
        seen = self.observe(
            status.rollout_failure(live, snapshot.pods), serving=self.serving, desired=live
        )
        return _Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

    def rolled_back(self, recorded: Mapping[str, Any]) -> _Rollout:
        """The serving version alone at every replica; the candidate goes. Stalled until
        the spec names another version."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        writes = [
            *_changed(
                "Service",
                manifests.service(owner, self.serving_version),
                snapshot.service,
                Step(
                    "RolledBack",
                    f"Service {owner.name} routes to version {self.serving_version} alone again",
                ),
            ),
            *_changed(
                "Deployment",
                canary.rescaled(self.serving, spec.replicas),
                self.serving,
                Step(
                    "RolledBack",
                    f"scaled version {self.serving_version} back to {spec.replicas} replicas",
                ),
            ),
            *_ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
            *_unsplit(snapshot, owner),
            *self._retired(self.serving),
        ]
        message = f"version {spec.version} rolled back: {recorded.get('message', '')}"
        failure = status.Failure(rollout.ANALYSIS_FAILED, message)
        seen = self.observe(failure, serving=self.serving)
        return _Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

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
                *_ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
                *_unsplit(snapshot, owner),
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
                for write in _changed(
                    "Service",
                    service,
                    services.get(service["metadata"]["name"]),
                    Step("VersionService", f"Service {service['metadata']['name']} for {routed}"),
                )
            ),
            *_changed("Ingress", stable, snapshot.ingress, Step("IngressSplit", routed)),
            *_changed("Ingress", weighted, snapshot.canary_ingress, Step("IngressSplit", routed)),
        ]

    def _retired(self, keep: Mapping[str, Any] | None) -> list[Write]:
        return _retired(self.deployments, [self.serving, keep])


@dataclass(frozen=True)
class _ShadowRun:
    """The candidate at `spec.replicas` behind its own Service, which only the serving
    version's copies reach; the stable Service and the Ingress stay on the serving
    version, untouched (see `shadow`)."""

    snapshot: Snapshot
    config: OperatorConfig
    observe: "_Observer"
    deployments: list[Mapping[str, Any]]
    serving: Mapping[str, Any]
    serving_version: str

    def analysing(self, progress: rollout.Progress, now: str) -> _Rollout:
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
            *_changed(
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
            *_shadow_settings(
                snapshot,
                owner,
                {self.serving_version, spec.version},
                {self.serving_version: settings} if copying else {},
            ),
        ]
        recheck = None
        if not writes and copying:
            elapsed = _seconds(now) - _seconds(progress.step_started)
            measured = snapshot.measured or rollout.Measurement()
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
        return _Rollout(replace(seen, rollout=found), tuple(writes), recheck)

    def promoting(self, recorded: Mapping[str, Any]) -> _Rollout:
        """Copying stops and the Service switches to the candidate, already at every
        replica; once it serves, blue/green retires the serving version and the
        candidate's own Service."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        live = snapshot.desired_holder
        candidate = manifests.deployment(owner, spec, self.config)
        complete = routing.rollout_complete(live) and not diff.differs(candidate, live)
        writes = [
            *_shadow_settings(snapshot, owner, {self.serving_version, spec.version}),
            *_changed(
                "Deployment",
                candidate,
                live,
                Step("Promoting", f"restored Deployment {candidate['metadata']['name']}"),
            ),
            *_changed(
                "Service",
                manifests.service(owner, spec.version if complete else self.serving_version),
                snapshot.service,
                Step(
                    "Promoted",
                    f"Service {owner.name} switched from version {self.serving_version} "
                    f"to {spec.version} after its shadow analysis",
                ),
            ),
            *_ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
        ]
        seen = self.observe(
            status.rollout_failure(live, snapshot.pods), serving=self.serving, desired=live
        )
        return _Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

    def rolled_back(self, recorded: Mapping[str, Any]) -> _Rollout:
        """Copying stops, the candidate and its Service go; the serving version, which
        alone answered throughout, carries on. Stalled until the spec names another
        version."""
        owner, spec, snapshot = self.observe.owner, self.observe.spec, self.snapshot
        writes = [
            *_shadow_settings(snapshot, owner, {self.serving_version}),
            *self._stable(
                Step("RolledBack", f"Service {owner.name} routes to version {self.serving_version}")
            ),
            *_unsplit(snapshot, owner),
            *self._retired(None),
        ]
        message = f"version {spec.version} rolled back: {recorded.get('message', '')}"
        failure = status.Failure(rollout.ANALYSIS_FAILED, message)
        seen = self.observe(failure, serving=self.serving)
        return _Rollout(replace(seen, rollout=dict(recorded)), tuple(writes))

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
        return [*_changed("Service", service, live, step), *_unsplit(snapshot, owner, keep=name)]

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
            *_changed(
                "Service", manifests.service(owner, self.serving_version), snapshot.service, step
            ),
            *_ingress_writes(snapshot, owner, spec, self.config, self.serving_version),
        ]

    def _retired(self, keep: Mapping[str, Any] | None) -> list[Write]:
        return _retired(self.deployments, [self.serving, keep])


def _retired(
    deployments: Sequence[Mapping[str, Any]], keep: Sequence[Mapping[str, Any] | None]
) -> list[Write]:
    """Deletes of every version's Deployment but those in `keep`."""
    writes = []
    for retired in routing.to_retire(deployments, keep):
        name = retired["metadata"]["name"]
        step = Step("Retired", f"deleted Deployment {name} of version {version_of(retired)}")
        writes.append(Write("Deployment", name, None, step))
    return writes


def _unsplit(snapshot: Snapshot, owner: manifests.Owner, keep: str | None = None) -> list[Write]:
    """Deletes of what an Ingress split by weight or a Shadow added, once it is over;
    `keep`: the name of a version's Service still wanted."""
    writes = []
    if snapshot.canary_ingress is not None and owned(snapshot.canary_ingress, owner):
        name = snapshot.canary_ingress["metadata"]["name"]
        writes.append(
            Write("Ingress", name, None, Step("IngressDeleted", f"deleted Ingress {name}"))
        )
    for service in snapshot.version_services:
        if owned(service, owner) and service["metadata"]["name"] != keep:
            name = service["metadata"]["name"]
            step = Step("ServiceDeleted", f"deleted Service {name}")
            writes.append(Write("Service", name, None, step))
    return writes


def _shadow_settings(
    snapshot: Snapshot,
    owner: manifests.Owner,
    kept: set[str],
    copying: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Write]:
    """The writes of the shadow settings ConfigMaps: `copying` (version → settings) for
    the serving version under a Shadow, `{}` for the other `kept` versions that have one,
    none for a version whose Deployment goes."""
    writes = []
    for change in shadow.changes(owner, snapshot.shadow_configs, kept, copying or {}):
        if change.manifest is None:
            step = Step("ConfigMapDeleted", f"deleted ConfigMap {change.name}")
        elif change.settings:
            step = Step(
                "ShadowCopying",
                f"version {change.version} copies {change.settings['percent']} % of its "
                f"predictions to {change.settings['url']}",
            )
        else:
            step = Step("ShadowStopped", f"version {change.version} copies no predictions")
        writes.append(Write("ConfigMap", change.name, change.manifest, step))
    return writes


def _widened(service: Mapping[str, Any] | None) -> bool:
    """Whether the Service selects every version's pods (by the model label alone)."""
    selector = routing.field(service, "spec", "selector") or {}
    return bool(selector) and naming.VERSION_LABEL not in selector


def _changed(kind: str, manifest: dict, live: Mapping[str, Any] | None, step: Step) -> list[Write]:
    # A selector is compared whole: a widened Service's selector is a subset of the
    # narrow one's, which `differs` alone would not call a change.
    selector = routing.field(manifest, "spec", "selector")
    same_selector = kind != "Service" or selector == routing.field(live, "spec", "selector")
    if live is not None and same_selector and not diff.differs(manifest, live):
        return []
    return [Write(kind, manifest["metadata"]["name"], manifest, step)]
