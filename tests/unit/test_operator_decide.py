"""Reconcile decisions from snapshots: what a pass writes, which status and Events follow.

Each scenario replays what the executor does: a plan's writes land (the objects the
API server would return go into the next snapshot) and the model is decided again,
until a plan writes nothing.
"""

import copy
from dataclasses import replace

from batcomputer_operator import manifests
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.decide import Snapshot, decide
from batcomputer_operator.naming import TEMPLATE_HASH_ANNOTATION
from batcomputer_operator.spec import parse_spec
from batcomputer_operator.status import Failure

CONFIG = OperatorConfig(server_image="registry.local/server:1")
OWNER = manifests.Owner("crime", "models", "uid-crime")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/"


def _spec(version, replicas=1):
    return {"version": version, "replicas": replicas, "source": {"uri": URI + version}}


def _model(version="1.0.0", *, replicas=1, status=None, generation=1, spec=None):
    return {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {
            "name": "crime",
            "namespace": "models",
            "uid": OWNER.uid,
            "generation": generation,
        },
        "spec": spec if spec is not None else _spec(version, replicas),
        "status": status or {},
    }


def _deployment(version, *, replicas=1, complete=True, generation=1):
    live = copy.deepcopy(manifests.deployment(OWNER, parse_spec(_spec(version, replicas)), CONFIG))
    live["metadata"]["generation"] = generation
    ready = replicas if complete else 0
    live["status"] = {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    return live


def _service(version):
    return copy.deepcopy(manifests.service(OWNER, version))


def _pod(deployment, uid, *, waiting=None):
    template = deployment["spec"]["template"]["metadata"]
    status = {"containerStatuses": [{"name": "server", "ready": waiting is None, "state": {}}]}
    if waiting is not None:
        status["containerStatuses"][0]["state"] = {
            "waiting": {"reason": waiting, "message": "back-off restarting failed container"}
        }
    return {
        "metadata": {
            "name": f"{deployment['metadata']['name']}-{uid}",
            "uid": uid,
            "labels": dict(template["labels"]),
            "annotations": {
                TEMPLATE_HASH_ANNOTATION: template["annotations"][TEMPLATE_HASH_ANNOTATION]
            },
        },
        "status": status,
    }


def _settled(model, snapshot, now=T0):
    """Decide and land the writes until a plan writes nothing; every plan, in order."""
    plans = [decide(model, snapshot, CONFIG, now)]
    while plans[-1].writes:
        snapshot = _landed(snapshot, plans[-1].writes)
        plans.append(decide(model, snapshot, CONFIG, now))
        assert len(plans) < 5, "plans keep writing"
    return plans, snapshot


def _landed(snapshot, writes):
    """The snapshot once the writes are done, as the API server would answer them:
    a written Deployment has a generation its controller has not observed yet."""
    deployments = {d["metadata"]["name"]: d for d in snapshot.deployments}
    service, ingress, holder = snapshot.service, snapshot.ingress, snapshot.desired_holder
    for write in writes:
        if write.kind == "Deployment" and write.manifest is None:
            deployments.pop(write.name, None)
        elif write.kind == "Deployment":
            before = deployments.get(write.name) or {}
            returned = copy.deepcopy(write.manifest)
            generation = before.get("metadata", {}).get("generation", 0) + 1
            returned["metadata"]["generation"] = generation
            returned["status"] = {**before.get("status", {}), "observedGeneration": generation - 1}
            deployments[write.name] = holder = returned
        elif write.kind == "Service":
            service = copy.deepcopy(write.manifest)
        elif write.kind == "Ingress":
            ingress = copy.deepcopy(write.manifest) if write.manifest else None
    return Snapshot(
        deployments=tuple(deployments.values()),
        desired_holder=holder,
        service=service,
        ingress=ingress,
        pods=snapshot.pods,
        backends=snapshot.backends,
    )


def _told(plans):
    """Event reasons of the writes of every plan and the transitions of the last."""
    return [w.step.reason for p in plans for w in p.writes] + [
        s.reason for s in plans[-1].transitions
    ]


def _conditions(plan):
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}


def test_first_rollout_creates_the_deployment_and_a_service_routing_to_it():
    plans, snapshot = _settled(_model(), Snapshot())
    first = plans[0]
    # The Service first: should a stranger hold its name, nothing has been created yet.
    assert [(w.kind, w.name, w.manifest is not None) for w in first.writes] == [
        ("Service", "crime", True),
        ("Deployment", "crime-v1-0-0", True),
    ]
    assert _told(plans) == ["ServiceCreated", "Deploying"]
    last = plans[-1]
    assert _conditions(last)["Reconciling"] == ("True", "RollingOut")
    assert not last.ready and last.status_changed
    assert snapshot.service["spec"]["selector"]["batcomputer.io/version"] == "1.0.0"


def test_a_first_rollout_at_zero_replicas_is_ready_in_the_pass_that_creates_it():
    plans, snapshot = _settled(_model(replicas=0), Snapshot())
    assert _told(plans) == ["ServiceCreated", "Deploying", "Ready"]
    last = plans[-1]
    assert last.ready and _conditions(last)["Ready"] == ("True", "Stopped")
    assert last.status["desiredVersion"] == "1.0.0"
    # Once the Deployment's controller has observed it: the same status, nothing to write.
    observed = _deployment("1.0.0", replicas=0)
    snapshot = replace(snapshot, deployments=(observed,), desired_holder=observed)
    again = decide(_model(replicas=0, status=last.status), snapshot, CONFIG, T1)
    assert (again.writes, again.transitions, again.status_changed) == ((), (), False)


def test_scaling_to_zero_is_ready_only_once_the_pods_are_gone():
    running = _deployment("1.0.0", replicas=2)
    snapshot = Snapshot(deployments=(running,), desired_holder=running, service=_service("1.0.0"))
    plans, snapshot = _settled(_model(replicas=0, generation=2), snapshot)
    assert _told(plans) == ["Scaled"]
    assert not plans[-1].ready
    stopped = _deployment("1.0.0", replicas=0, generation=2)
    snapshot = replace(snapshot, deployments=(stopped,), desired_holder=stopped)
    assert decide(_model(replicas=0, generation=2), snapshot, CONFIG, T1).ready


def test_ready_once_the_endpoints_list_every_replica_and_quiet_after():
    deployment = _deployment("1.0.0")
    pod = _pod(deployment, "p1")
    snapshot = Snapshot(
        deployments=(deployment,),
        desired_holder=deployment,
        service=_service("1.0.0"),
        pods=(pod,),
        backends=frozenset({"p1"}),
    )
    plan = decide(_model(), snapshot, CONFIG, T0)
    assert plan.writes == ()
    assert plan.ready and _conditions(plan)["Ready"] == ("True", "Serving")
    assert [s.reason for s in plan.transitions] == ["Ready"]
    # Decided again on the status it wrote: nothing to write, nothing to tell.
    again = decide(_model(status=plan.status), snapshot, CONFIG, T1)
    assert (again.writes, again.transitions, again.status_changed) == ((), (), False)


def test_not_ready_while_the_endpoints_lag_behind_the_selector():
    deployment = _deployment("1.0.0")
    snapshot = Snapshot(
        deployments=(deployment,),
        desired_holder=deployment,
        service=_service("1.0.0"),
        pods=(_pod(deployment, "p1"),),
    )
    plan = decide(_model(), snapshot, CONFIG, T0)
    assert plan.writes == () and not plan.ready
    assert _conditions(plan)["Reconciling"][0] == "True"


def _serving(version, uid="p1"):
    deployment = _deployment(version)
    pod = _pod(deployment, uid)
    return deployment, pod


def test_switch_waits_for_the_new_version_then_retires_the_old_one():
    old, old_pod = _serving("1.0.0")
    base = Snapshot(
        deployments=(old,), service=_service("1.0.0"), pods=(old_pod,), backends=frozenset({"p1"})
    )
    model = _model("2.0.0", generation=2)
    plans, _ = _settled(model, base)
    assert _told(plans) == ["Deploying"]  # the Service stays on 1.0.0 meanwhile
    assert _conditions(plans[-1])["Reconciling"] == ("True", "RollingOut")
    assert plans[-1].status["servingVersion"] == "1.0.0"

    new, new_pod = _serving("2.0.0", "p2")
    ready_new = Snapshot(
        deployments=(old, new),
        desired_holder=new,
        service=_service("1.0.0"),
        pods=(old_pod, new_pod),
        backends=frozenset({"p1"}),
    )
    plans, switched = _settled(model, ready_new)
    # The Service switches; 1.0.0 stays while the endpoints still send traffic to it.
    assert _told(plans) == ["Switched"]
    assert [d["metadata"]["name"] for d in switched.deployments] == ["crime-v1-0-0", "crime-v2-0-0"]
    assert _conditions(plans[-1])["Reconciling"] == ("True", "SwitchingTraffic")

    caught_up = Snapshot(
        deployments=(old, new),
        desired_holder=new,
        service=_service("2.0.0"),
        pods=(old_pod, new_pod),
        backends=frozenset({"p2"}),
    )
    plans, _ = _settled(model, caught_up)
    assert [(w.kind, w.name, w.manifest) for w in plans[0].writes] == [
        ("Deployment", "crime-v1-0-0", None)
    ]
    assert _told(plans) == ["Retired", "Ready"]
    assert plans[-1].ready and plans[-1].status["servingVersion"] == "2.0.0"


def _stalled_rollout():
    old, old_pod = _serving("1.0.0")
    failing = _deployment("2.0.0", complete=False)
    crashing = _pod(failing, "p2", waiting="CrashLoopBackOff")
    return Snapshot(
        deployments=(old, failing),
        desired_holder=failing,
        service=_service("1.0.0"),
        pods=(old_pod, crashing),
        backends=frozenset({"p1"}),
    )


def test_a_crashing_version_stalls_and_never_gets_traffic():
    plan = decide(_model("2.0.0", generation=2), _stalled_rollout(), CONFIG, T0)
    assert plan.writes == ()
    assert _conditions(plan)["Stalled"] == ("True", "CrashLoopBackOff")
    assert plan.stalled and not plan.ready
    assert [(s.reason, s.warning) for s in plan.transitions] == [("CrashLoopBackOff", True)]
    assert plan.status["servingVersion"] == "1.0.0"


def test_reverting_a_stalled_version_retires_it_and_serves_the_old_one():
    stalled = _stalled_rollout()
    old = stalled.deployments[0]
    reverted = Snapshot(**{**stalled.__dict__, "desired_holder": old})
    plans, _ = _settled(_model("1.0.0", generation=3), reverted)
    assert [(w.kind, w.name, w.manifest) for w in plans[0].writes] == [
        ("Deployment", "crime-v2-0-0", None)
    ]
    assert plans[-1].ready and plans[-1].status["desiredVersion"] == "1.0.0"


def test_a_service_of_another_controller_is_never_taken_over():
    foreign = _service("1.0.0")
    foreign["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Other", "name": "x", "uid": "uid-x", "controller": True}
    ]
    plan = decide(_model(), Snapshot(service=foreign), CONFIG, T0)
    assert plan.writes == ()
    assert _conditions(plan)["Stalled"] == ("True", "NameConflict")
    assert (
        "Service crime already belongs to another controller"
        in plan.status["conditions"][0]["message"]
    )


def test_an_invalid_spec_writes_nothing_and_says_which_field():
    served = {"servingVersion": "1.0.0"}
    model = _model(spec={"version": "one", "source": {"uri": URI}}, status=served)
    plan = decide(model, Snapshot(), CONFIG, T0)
    assert plan.writes == ()
    stalled = _conditions(plan)["Stalled"]
    assert stalled == ("True", "InvalidSpec")
    assert "spec.version" in plan.status["conditions"][0]["message"]
    assert plan.status["servingVersion"] == "1.0.0"


def test_drift_is_repaired_and_told():
    deployment, pod = _serving("1.0.0")
    drifted = _service("1.0.0")
    drifted["spec"]["selector"]["batcomputer.io/version"] = "6.6.6"
    scaled = copy.deepcopy(deployment)
    scaled["spec"]["replicas"] = 5
    snapshot = Snapshot(
        deployments=(scaled,),
        desired_holder=scaled,
        service=drifted,
        pods=(pod,),
        backends=frozenset({"p1"}),
    )
    plans, landed = _settled(_model(), snapshot)
    assert _told(plans)[:2] == ["Scaled", "Repaired"]
    assert landed.service["spec"]["selector"]["batcomputer.io/version"] == "1.0.0"
    assert landed.desired_holder["spec"]["replicas"] == 1


def test_a_refused_write_stalls_with_the_api_servers_reason():
    snapshot = Snapshot(refusal=Failure("Invalid", "the API server refused: limits < requests"))
    plan = decide(_model(), snapshot, CONFIG, T0)
    assert plan.writes == ()
    assert _conditions(plan)["Stalled"] == ("True", "Invalid")


def test_a_deployment_about_to_change_is_never_switched_to():
    # 2.0.0's old template was complete; the spec changes it in place (replicas), so the
    # status it shows is about to be outdated: the Service must not move on its word.
    old, old_pod = _serving("1.0.0")
    new = _deployment("2.0.0", replicas=1)
    snapshot = Snapshot(
        deployments=(old, new),
        desired_holder=new,
        service=_service("1.0.0"),
        pods=(old_pod,),
        backends=frozenset({"p1"}),
    )
    plan = decide(_model("2.0.0", replicas=3, generation=2), snapshot, CONFIG, T0)
    assert [(w.kind, w.step.reason) for w in plan.writes] == [("Deployment", "Scaled")]


def test_an_ingress_follows_the_spec():
    deployment, pod = _serving("1.0.0")
    spec = {**_spec("1.0.0"), "ingress": {"path": "/crime"}}
    snapshot = Snapshot(
        deployments=(deployment,),
        desired_holder=deployment,
        service=_service("1.0.0"),
        pods=(pod,),
        backends=frozenset({"p1"}),
    )
    plan = decide(_model(spec=spec), snapshot, CONFIG, T0)
    # The server learns its root path from the Deployment, the route from the Ingress.
    assert [(w.kind, w.step.reason) for w in plan.writes] == [
        ("Deployment", "Updated"),
        ("Ingress", "IngressApplied"),
    ]
    ingress = copy.deepcopy(plan.writes[-1].manifest)
    ingress["metadata"]["ownerReferences"] = manifests.deployment(
        OWNER, parse_spec(_spec("1.0.0")), CONFIG
    )["metadata"]["ownerReferences"]
    dropped = decide(_model(), Snapshot(**{**snapshot.__dict__, "ingress": ingress}), CONFIG, T0)
    assert [(w.kind, w.manifest, w.step.reason) for w in dropped.writes] == [
        ("Ingress", None, "IngressDeleted")
    ]
