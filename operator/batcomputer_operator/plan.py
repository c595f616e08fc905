"""The parts of a reconcile plan and the writes every rollout strategy shares, as pure
builders: what the cluster shows of a BatModel (`Snapshot`), a write and the Event that
tells it (`Write`, `Step`), what a pass saw (`Observer`), and the writes of the model's
Ingress, of retired Deployments, of the Services and Ingress a Canary or a Shadow adds,
and of the shadow settings ConfigMaps.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batcomputer_operator import (
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
from batcomputer_operator.spec import BatModelSpec


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


def version_of(deployment: Mapping[str, Any]) -> str:
    metadata = deployment.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return annotations.get(naming.VERSION_ANNOTATION) or labels.get(naming.VERSION_LABEL, "?")


@dataclass(frozen=True)
class Rollout:
    """The writes of one plan and what its pass saw; `recheck`: seconds until an
    analysis wants another look."""

    observed: status.Observed
    writes: tuple[Write, ...]
    recheck: float | None = None


@dataclass(frozen=True)
class Observer:
    """Turns what a pass saw of the model's versions into `status.Observed`."""

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


def changed(kind: str, manifest: dict, live: Mapping[str, Any] | None, step: Step) -> list[Write]:
    """The write of `manifest` unless `live` already holds it."""
    # A selector is compared whole: a widened Service's selector is a subset of the
    # narrow one's, which `differs` alone would not call a change.
    selector = routing.field(manifest, "spec", "selector")
    same_selector = kind != "Service" or selector == routing.field(live, "spec", "selector")
    if live is not None and same_selector and not diff.differs(manifest, live):
        return []
    return [Write(kind, manifest["metadata"]["name"], manifest, step)]


def ingress_writes(
    snapshot: Snapshot,
    owner: manifests.Owner,
    spec: BatModelSpec,
    config: OperatorConfig,
    version: str,
) -> list[Write]:
    """The model's Ingress, routing to the stable Service (which serves `version`), or
    its delete once the spec names none."""
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


def retired(
    deployments: Sequence[Mapping[str, Any]], keep: Sequence[Mapping[str, Any] | None]
) -> list[Write]:
    """Deletes of every version's Deployment but those in `keep`."""
    writes = []
    for going in routing.to_retire(deployments, keep):
        name = going["metadata"]["name"]
        step = Step("Retired", f"deleted Deployment {name} of version {version_of(going)}")
        writes.append(Write("Deployment", name, None, step))
    return writes


def unsplit(snapshot: Snapshot, owner: manifests.Owner, keep: str | None = None) -> list[Write]:
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


def shadow_settings_writes(
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
