"""One reconcile pass for one BatModel: read, decide with the pure modules, write only differences.

Blue/green: the desired version gets its own Deployment; the Service keeps
routing to the version it serves until the desired one has every replica
updated and ready; only then does the Service switch, and once its Endpoints
list the new pods the other versions' Deployments go. A version that never
gets ready never gets traffic.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batcomputer_operator import manifests, naming, pinning, status
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.kube import Kube, KubeError
from batcomputer_operator.spec import BatModelSpec, SpecError, parse_spec


@dataclass(frozen=True)
class Step:
    """Something worth a Kubernetes Event on the BatModel."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Outcome:
    model: Mapping[str, Any]  # the BatModel the pass worked on, for posting events
    ready: bool
    steps: tuple[Step, ...]


def _owned(child: Mapping[str, Any] | None, owner: manifests.Owner) -> bool:
    refs = (child or {}).get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)


def _foreign(child: Mapping[str, Any] | None, owner: manifests.Owner) -> bool:
    """A child under the model's name that another controller owns: never taken over."""
    refs = (child or {}).get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") != owner.uid for ref in refs)


def _version_of(deployment: Mapping[str, Any]) -> str:
    metadata = deployment.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return annotations.get(naming.VERSION_ANNOTATION) or labels.get(naming.VERSION_LABEL, "?")


class _Pass:
    def __init__(self, kube: Kube, config: OperatorConfig, model: Mapping[str, Any]) -> None:
        self.kube = kube
        self.config = config
        self.model = model
        metadata = model["metadata"]
        self.owner = manifests.Owner(metadata["name"], metadata["namespace"], metadata["uid"])
        self.steps: list[Step] = []

    def note(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.steps.append(Step(reason, message, warning))

    def ensure_deployment(self, spec: BatModelSpec, live: dict | None) -> dict:
        desired = manifests.deployment(self.owner, spec, self.config)
        if live is not None and not manifests.differs(desired, live):
            return live
        name = desired["metadata"]["name"]
        applied = self.kube.apply(desired)
        if live is None:
            self.note("Deploying", f"created Deployment {name} for version {spec.version}")
        elif (live.get("spec") or {}).get("replicas") != spec.replicas:
            self.note("Scaled", f"scaled Deployment {name} to {spec.replicas} replicas")
        else:
            self.note("Updated", f"updated Deployment {name} of version {spec.version}")
        return applied

    def ensure_service(self, version: str, live: dict | None) -> None:
        desired = manifests.service(self.owner, version)
        if live is not None and not manifests.differs(desired, live):
            return
        before = ((live or {}).get("metadata", {}).get("annotations") or {}).get(
            naming.SERVING_ANNOTATION
        )
        self.kube.apply(desired)
        name = self.owner.name
        if live is None:
            self.note("ServiceCreated", f"created Service {name} routing to version {version}")
        elif before != version:
            self.note("Switched", f"Service {name} switched from version {before} to {version}")
        else:
            self.note("Repaired", f"restored Service {name} routing to version {version}")

    def ensure_ingress(self, spec: BatModelSpec, version: str) -> None:
        desired = manifests.ingress(self.owner, spec, self.config, version)
        live = self.kube.get("Ingress", self.owner.namespace, self.owner.name)
        if desired is None:
            if live is not None and _owned(live, self.owner):
                self.kube.delete("Ingress", self.owner.namespace, self.owner.name)
                self.note("IngressDeleted", f"deleted Ingress {self.owner.name}")
            return
        if live is None or manifests.differs(desired, live):
            self.kube.apply(desired)
            self.note("IngressApplied", f"Ingress {self.owner.name} serves {spec.ingress.path}")

    def retire(self, deployments: list[dict]) -> None:
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            self.kube.delete("Deployment", self.owner.namespace, name)
            version = _version_of(deployment)
            self.note("Retired", f"deleted Deployment {name} of version {version}")

    def run(self, now: str) -> bool:
        """The pass itself; returns whether the model ended up Ready."""
        namespace, name = self.owner.namespace, self.owner.name
        live_status = self.model.get("status") or {}
        try:
            spec = parse_spec(self.model.get("spec") or {})
        except SpecError as error:
            seen = self._observed_invalid(error)
            return self.finish(seen, live_status, now)
        deployments = [
            d
            for d in self.kube.list("Deployment", namespace, {naming.MODEL_LABEL: name})
            if _owned(d, self.owner)
        ]
        wanted_name = naming.deployment_name(name, spec.version)
        by_name = {d["metadata"]["name"]: d for d in deployments}
        service = self.kube.get("Service", namespace, name)
        existing = by_name.get(wanted_name)
        if existing is None:  # a first rollout: make sure the name is free to take
            existing = self.kube.get("Deployment", namespace, wanted_name)
        conflict = self._conflict(service, existing)
        if conflict is not None:
            return self.finish(self._observed(spec, conflict), live_status, now)
        endpoints = self.kube.get("Endpoints", namespace, name)
        pods = self.kube.list("Pod", namespace, {naming.MODEL_LABEL: name})
        serving = status.serving_deployment(endpoints, pods, deployments)
        refused = pinning.refusal(pinning.pinning(spec), self.config.require_pinned_bundles)
        if refused is not None:  # nothing is deployed for it; the serving version carries on
            unpinned = status.Failure(pinning.UNPINNED, refused)
            return self.finish(self._observed(spec, unpinned, serving=serving), live_status, now)

        try:
            desired = self.ensure_deployment(spec, existing)
            by_name[wanted_name] = desired
            deployments = list(by_name.values())
            target = status.route_target(desired, status.routed_deployment(service, deployments))
            self.ensure_service(_version_of(target), service)
            self.retire(status.to_retire(deployments, [desired, target, serving]))
            self.ensure_ingress(spec, _version_of(target))
        except KubeError as error:
            if error.lasting_reason is None:
                raise
            # e.g. requests above limits: valid for the CRD schema, refused for a Deployment.
            refused = status.Failure(error.lasting_reason, f"the API server refused: {error}")
            return self.finish(self._observed(spec, refused, serving=serving), live_status, now)

        seen = self._observed(
            spec,
            status.rollout_failure(desired, pods),
            serving=serving,
            desired=desired,
            selected=target is desired,
            answering=status.answering_pods(endpoints, pods, desired),
        )
        return self.finish(seen, live_status, now)

    def _conflict(self, service: dict | None, deployment: dict | None) -> status.Failure | None:
        for kind, child in (("Service", service), ("Deployment", deployment)):
            if _foreign(child, self.owner):
                name = child["metadata"]["name"]
                return status.Failure(
                    "NameConflict", f"{kind} {name} already belongs to another controller"
                )
        return None

    def _observed(
        self,
        spec: BatModelSpec,
        failure: status.Failure | None,
        *,
        serving: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
        selected: bool = False,
        answering: int = 0,
    ) -> status.Observed:
        """`serving`: the Deployment the Service's Endpoints route to; `selected`: whether
        the Service's selector points at `desired`."""
        return status.Observed(
            generation=self.model["metadata"].get("generation", 0),
            desired_version=spec.version,
            replicas=spec.replicas,
            ready_replicas=status.ready_replicas(desired),
            complete=selected and status.rollout_complete(desired),
            answering=answering,
            serving_version=_version_of(serving) if serving is not None else None,
            failure=failure,
            url=manifests.service_url(self.owner),
            ingress_path=spec.ingress.path if spec.ingress else None,
            pinning=pinning.pinning(spec),
        )

    def _observed_invalid(self, error: SpecError) -> status.Observed:
        raw = self.model.get("spec") or {}
        version = raw.get("version")
        return status.Observed(
            generation=self.model["metadata"].get("generation", 0),
            desired_version=version if isinstance(version, str) else None,
            replicas=0,
            ready_replicas=0,
            complete=False,
            answering=0,
            serving_version=(self.model.get("status") or {}).get("servingVersion"),
            failure=status.Failure("InvalidSpec", str(error)),
            url=manifests.service_url(self.owner),
            ingress_path=None,
        )

    def finish(self, seen: status.Observed, live_status: Mapping[str, Any], now: str) -> bool:
        previous = live_status.get("conditions") or []
        new = status.build_status(seen, previous, now)
        if status.status_differs(new, live_status):
            self.kube.patch_status(self.owner.namespace, self.owner.name, new)
        self._note_transitions(previous, new["conditions"])
        return new["conditions"][0]["status"] == "True"

    def _note_transitions(self, previous: list, conditions: list[dict]) -> None:
        """An Event when Ready or Stalled turns True, or stays True for another reason."""
        was = {c.get("type"): (c.get("status"), c.get("reason")) for c in previous}
        for condition in conditions:
            now = (condition["status"], condition["reason"])
            if condition["status"] != "True" or was.get(condition["type"]) == now:
                continue
            if condition["type"] == "Stalled":
                self.note(condition["reason"], condition["message"], warning=True)
            elif condition["type"] == "Ready":
                self.note("Ready", condition["message"])


def reconcile(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, now: str
) -> Outcome | None:
    """One pass; None when the BatModel is gone (or going), which ends its worker.

    `now` (RFC 3339) stamps conditions that change in this pass.
    """
    model = kube.get("BatModel", namespace, name)
    if model is None or model["metadata"].get("deletionTimestamp"):
        return None
    work = _Pass(kube, config, model)
    ready = work.run(now)
    return Outcome(model=model, ready=ready, steps=tuple(work.steps))
