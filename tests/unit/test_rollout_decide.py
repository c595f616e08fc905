"""Canary from snapshots: each step's pods and the Service over both versions, the
analysis advancing, promoting or rolling back naming the threshold; and a rollout that
cannot run as written, refused in status with nothing written, so the version that
serves keeps serving."""

import copy
from dataclasses import replace

import pytest

from batcomputer_operator import manifests
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.decide import Snapshot, decide
from batcomputer_operator.naming import TEMPLATE_HASH_ANNOTATION
from batcomputer_operator.rollout import Measurement
from batcomputer_operator.spec import parse_spec

CONFIG = OperatorConfig(server_image="registry.local/server:1")
OWNER = manifests.Owner("crime", "models", "uid-crime")
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/"
T0 = "2026-01-01T00:00:00Z"


def _spec(version, rollout=None):
    spec = {"version": version, "replicas": 4, "source": {"uri": URI + version}}
    if rollout is not None:
        spec["rollout"] = rollout
    return spec


def _serving():
    """1.0.0 serving, a pod of it behind the Service."""
    deployment = manifests.deployment(OWNER, parse_spec(_spec("1.0.0")), CONFIG)
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {
        "observedGeneration": 1,
        **dict.fromkeys(("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"), 4),
    }
    pod = {
        "metadata": {
            "name": "crime-v1-0-0-p1",
            "uid": "p1",
            "labels": dict(deployment["spec"]["template"]["metadata"]["labels"]),
        },
        "status": {"containerStatuses": [{"name": "server", "ready": True, "state": {}}]},
    }
    return Snapshot(
        deployments=(deployment,),
        service=manifests.service(OWNER, "1.0.0"),
        pods=(pod,),
        backends=frozenset({"p1"}),
    )


def _model(spec):
    return {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": "crime", "namespace": "models", "uid": OWNER.uid, "generation": 2},
        "spec": spec,
        "status": {"servingVersion": "1.0.0", "observedGeneration": 1},
    }


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        (
            {"strategy": "Shadow", "mirrorPercent": 10, "analysis": {"minRequests": -1}},
            "spec.rollout.analysis.minRequests: -1 is outside 0..1000000",
        ),
        (
            {"strategy": "Shadow", "steps": [{"weight": 10}]},
            "spec.rollout.steps: applies to strategy Canary only, not Shadow",
        ),
    ],
)
def test_a_rollout_the_operator_does_not_carry_out_writes_nothing(rollout, message):
    plan = decide(_model(_spec("2.0.0", rollout)), _serving(), CONFIG, T0)
    assert plan.writes == ()
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == (
        "True",
        "InvalidSpec",
    )
    assert message in conditions["Stalled"]["message"]
    assert plan.status["servingVersion"] == "1.0.0"
    assert plan.stalled and not plan.ready
    assert [step.reason for step in plan.transitions] == ["InvalidSpec"]


def test_blue_green_spelled_out_rolls_out_as_before():
    plan = decide(_model(_spec("2.0.0", {"strategy": "BlueGreen"})), _serving(), CONFIG, T0)
    assert [(write.kind, write.name) for write in plan.writes] == [("Deployment", "crime-v2-0-0")]
    assert not plan.stalled


CANARY = {
    "strategy": "Canary",
    "steps": [{"weight": 25, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
    "analysis": {"maxErrorRatio": 0.05, "minRequests": 10},
}
HEALTHY = Measurement(requests=100, errors=0, p99_seconds=0.02)
FAILING = Measurement(requests=100, errors=30, p99_seconds=0.02)
T_LATER = "2026-01-01T00:00:30Z"


def _complete(deployment):
    """`deployment` as its controller reports it once every replica is ready."""
    live = copy.deepcopy(deployment)
    replicas = live["spec"]["replicas"]
    generation = live["metadata"].get("generation", 1)
    live["metadata"]["generation"] = generation
    live["status"] = {
        "observedGeneration": generation,
        **dict.fromkeys(
            ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"), replicas
        ),
    }
    return live


def _landed(snapshot, plan, *, ready=True):
    """The snapshot after `plan`'s writes, Deployments rolled out when `ready`."""
    deployments = {d["metadata"]["name"]: d for d in snapshot.deployments}
    services = {s["metadata"]["name"]: s for s in (snapshot.service, *snapshot.version_services)}
    ingresses = {"crime": snapshot.ingress, "crime-canary": snapshot.canary_ingress}
    for write in plan.writes:
        if write.kind == "Deployment" and write.manifest is None:
            deployments.pop(write.name)
        elif write.kind == "Deployment":
            before = deployments.get(write.name, {"metadata": {"generation": 0}})
            landed = copy.deepcopy(write.manifest)
            landed["metadata"]["generation"] = before["metadata"].get("generation", 0) + 1
            landed["status"] = {"observedGeneration": 0}
            deployments[write.name] = _complete(landed) if ready else landed
        elif write.kind == "Service":
            services[write.name] = copy.deepcopy(write.manifest)
        elif write.kind == "Ingress":
            ingresses[write.name] = copy.deepcopy(write.manifest)
    return replace(
        snapshot,
        deployments=tuple(deployments.values()),
        desired_holder=deployments.get("crime-v2-0-0"),
        service=services.pop("crime"),
        version_services=tuple(s for s in services.values() if s is not None),
        ingress=ingresses["crime"],
        canary_ingress=ingresses["crime-canary"],
    )


def _recorded(model, plan):
    return {**model, "status": plan.status}


def _conditions(plan):
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}


def _replicas(snapshot):
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in snapshot.deployments}


def _in_place_at_first_step():
    model = _model(_spec("2.0.0", CANARY))
    first = decide(model, _serving(), CONFIG, T0)
    snapshot = _landed(_serving(), first)
    widening = decide(model, snapshot, CONFIG, T0)
    return _recorded(model, first), _landed(snapshot, widening), first, widening


def test_a_canary_step_shares_the_replicas_and_widens_the_service_once_the_candidate_is_ready():
    model = _model(_spec("2.0.0", CANARY))
    first = decide(model, _serving(), CONFIG, T0)
    assert [(w.kind, w.name, w.manifest["spec"]["replicas"]) for w in first.writes] == [
        ("Deployment", "crime-v2-0-0", 1),
        ("Deployment", "crime-v1-0-0", 3),
    ]
    assert first.status["rollout"]["verdict"] == "Analysing"
    assert first.status["rollout"]["message"] == (
        "canary step 1/2 at 25 %: waiting for 1 pods of version 2.0.0 to take traffic"
    )
    assert (first.status["rollout"]["step"], first.status["rollout"]["weight"]) == ("1/2", 25)
    # Not ready yet: the Service keeps routing to 1.0.0 alone.
    pending = decide(model, _landed(_serving(), first, ready=False), CONFIG, T0)
    assert pending.writes == ()
    _, snapshot, _, widening = _in_place_at_first_step()
    assert [(w.kind, w.step.reason) for w in widening.writes] == [("Service", "Widened")]
    assert snapshot.service["spec"]["selector"] == {"batcomputer.io/model": "crime"}
    assert snapshot.service["metadata"]["annotations"]["batcomputer.io/serving-version"] == "1.0.0"
    assert _replicas(snapshot) == {"crime-v1-0-0": 3, "crime-v2-0-0": 1}
    assert widening.status["servingVersion"] == "1.0.0"
    assert _conditions(widening)["Reconciling"][0] == "True"


def test_the_analysis_waits_out_the_pause_then_advances_then_promotes():
    model, snapshot, _, _ = _in_place_at_first_step()
    measured = replace(snapshot, measured=HEALTHY)
    waiting = decide(model, measured, CONFIG, "2026-01-01T00:00:04Z")
    assert waiting.writes == ()
    assert waiting.status["rollout"]["message"] == "canary step 1/2 at 25 %: analysing for 10s"
    assert waiting.recheck == 5.0
    advanced = decide(model, measured, CONFIG, T_LATER)
    assert advanced.writes == ()
    assert advanced.status["rollout"]["stepIndex"] == 1
    assert advanced.status["rollout"]["stepStartedAt"] == T_LATER
    assert advanced.recheck == 0  # the next step's writes are due at once
    model = _recorded(model, advanced)
    second = decide(model, snapshot, CONFIG, T_LATER)
    snapshot = _landed(snapshot, second)
    assert _replicas(snapshot) == {"crime-v1-0-0": 2, "crime-v2-0-0": 2}
    assert second.status["rollout"]["effectiveWeight"] == 50.0
    promoted = decide(model, replace(snapshot, measured=HEALTHY), CONFIG, "2026-01-01T00:01:00Z")
    assert promoted.writes == ()
    assert promoted.status["rollout"]["verdict"] == "Promoted"
    assert promoted.recheck == 0
    model = _recorded(model, promoted)
    scaling = decide(model, snapshot, CONFIG, "2026-01-01T00:01:01Z")
    assert [(w.kind, w.step.reason) for w in scaling.writes] == [("Deployment", "Promoting")]
    snapshot = _landed(snapshot, scaling)
    assert _replicas(snapshot) == {"crime-v1-0-0": 2, "crime-v2-0-0": 4}
    switching = decide(model, snapshot, CONFIG, "2026-01-01T00:01:02Z")
    assert [(w.kind, w.step.reason) for w in switching.writes] == [("Service", "Promoted")]
    snapshot = _landed(snapshot, switching)
    assert snapshot.service["spec"]["selector"]["batcomputer.io/version"] == "2.0.0"
    # From here on blue/green: once the endpoints no longer list 1.0.0's pod, it goes.
    kept = decide(model, snapshot, CONFIG, "2026-01-01T00:01:03Z")
    assert kept.writes == ()
    snapshot = replace(snapshot, backends=frozenset())
    retiring = decide(model, snapshot, CONFIG, "2026-01-01T00:01:03Z")
    assert [(w.kind, w.name, w.manifest) for w in retiring.writes] == [
        ("Deployment", "crime-v1-0-0", None)
    ]
    assert retiring.status["rollout"] is None


def test_a_failing_candidate_is_rolled_back_naming_the_threshold():
    model, snapshot, _, _ = _in_place_at_first_step()
    failed = decide(model, replace(snapshot, measured=FAILING), CONFIG, "2026-01-01T00:00:02Z")
    assert failed.writes == ()
    assert failed.recheck == 0  # traffic moves back in the very next pass
    assert failed.stalled and not failed.ready
    assert _conditions(failed)["Stalled"] == ("True", "AnalysisFailed")
    assert [(s.reason, s.warning) for s in failed.transitions] == [("AnalysisFailed", True)]
    assert "maxErrorRatio: 30 of 100 requests failed" in failed.transitions[0].message
    assert (failed.status["rollout"]["verdict"], failed.status["rollout"]["failedThreshold"]) == (
        "RolledBack",
        "maxErrorRatio",
    )
    model = _recorded(model, failed)
    back = decide(model, snapshot, CONFIG, "2026-01-01T00:00:03Z")
    assert [(w.kind, w.name, w.manifest is None) for w in back.writes] == [
        ("Service", "crime", False),
        ("Deployment", "crime-v1-0-0", False),
        ("Deployment", "crime-v2-0-0", True),
    ]
    snapshot = _landed(snapshot, back)
    assert _replicas(snapshot) == {"crime-v1-0-0": 4}
    assert snapshot.service == manifests.service(OWNER, "1.0.0")
    settled = decide(model, snapshot, CONFIG, "2026-01-01T00:00:04Z")
    assert settled.writes == ()
    assert _conditions(settled)["Stalled"] == ("True", "AnalysisFailed")
    assert settled.status["servingVersion"] == "1.0.0"
    assert settled.transitions == ()


def test_a_measurement_below_min_requests_waits_past_the_pause():
    model, snapshot, _, _ = _in_place_at_first_step()
    few = replace(snapshot, measured=Measurement(requests=3, errors=3))
    plan = decide(model, few, CONFIG, T_LATER)
    assert plan.writes == () and not plan.stalled
    assert plan.status["rollout"]["message"] == "canary step 1/2 at 25 %: waiting for 10 requests"
    assert plan.recheck == 5.0
    unmeasured = decide(model, snapshot, CONFIG, T_LATER)
    assert unmeasured.status["rollout"]["verdict"] == "Analysing"


def test_a_first_canary_rollout_has_nothing_to_compare_with_and_goes_blue_green():
    plan = decide(_model(_spec("2.0.0", CANARY)), Snapshot(), CONFIG, T0)
    assert [(w.kind, w.name) for w in plan.writes] == [
        ("Service", "crime"),
        ("Deployment", "crime-v2-0-0"),
    ]
    assert plan.writes[1].manifest["spec"]["replicas"] == 4
    assert plan.status["rollout"] is None


@pytest.mark.parametrize(
    "recorded",
    [
        {"candidateVersion": "2.0.0", "stepIndex": 7, "stepStartedAt": T0, "verdict": "Analysing"},
        {"candidateVersion": "1.9.0", "stepIndex": 1, "stepStartedAt": T0, "verdict": "RolledBack"},
        {"candidateVersion": "2.0.0", "stepIndex": "1", "verdict": "Promoted"},
    ],
)
def test_a_rollout_status_for_other_steps_or_versions_starts_over(recorded):
    model = _model(_spec("2.0.0", CANARY))
    model["status"]["rollout"] = recorded
    plan = decide(model, _serving(), CONFIG, T_LATER)
    assert plan.status["rollout"]["stepIndex"] == 0
    assert plan.status["rollout"]["stepStartedAt"] == T_LATER
    assert plan.status["rollout"]["verdict"] == "Analysing"
    assert not plan.stalled


def test_a_candidate_that_cannot_get_ready_gives_its_share_back():
    model, snapshot, _, _ = _in_place_at_first_step()
    candidate = next(d for d in snapshot.deployments if d["metadata"]["name"] == "crime-v2-0-0")
    template = candidate["spec"]["template"]["metadata"]
    crashing = {
        "metadata": {
            "name": "crime-v2-0-0-c1",
            "uid": "c1",
            "labels": dict(template["labels"]),
            "annotations": {
                TEMPLATE_HASH_ANNOTATION: template["annotations"][TEMPLATE_HASH_ANNOTATION]
            },
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": False,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                }
            ]
        },
    }
    unready = {**candidate, "status": {**candidate["status"], "readyReplicas": 0}}
    broken = replace(
        snapshot,
        deployments=tuple(
            unready if d["metadata"]["name"] == "crime-v2-0-0" else d for d in snapshot.deployments
        ),
        desired_holder=unready,
        pods=(*snapshot.pods, crashing),
    )
    plan = decide(model, broken, CONFIG, T_LATER)
    assert [(w.kind, w.name) for w in plan.writes] == [
        ("Service", "crime"),
        ("Deployment", "crime-v1-0-0"),
    ]
    assert plan.writes[0].manifest == manifests.service(OWNER, "1.0.0")
    assert plan.writes[1].manifest["spec"]["replicas"] == 4
    assert _conditions(plan)["Stalled"] == ("True", "CrashLoopBackOff")
    assert plan.status["servingVersion"] == "1.0.0"


def _backends(ingress):
    return [
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


@pytest.mark.parametrize("class_name", ["nginx", "traefik"])
def test_an_nginx_ingress_splits_by_the_weight_itself_and_is_put_back_after(class_name):
    spec = {**_spec("2.0.0", CANARY), "ingress": {"path": "/crime", "className": class_name}}
    model = _model(spec)
    snapshot = _serving()
    for _ in range(3):  # created, widened, then nothing left to write
        plan = decide(model, snapshot, CONFIG, T0)
        snapshot = _landed(snapshot, plan)
    assert plan.writes == ()
    model = _recorded(model, plan)
    if class_name != "nginx":  # split by pods behind the stable Service, as without Ingress
        assert _backends(snapshot.ingress) == ["crime"]
        assert (snapshot.canary_ingress, snapshot.version_services) == (None, ())
        return
    assert _backends(snapshot.ingress) == ["crime-v1-0-0"]
    assert _backends(snapshot.canary_ingress) == ["crime-v2-0-0"]
    annotations = snapshot.canary_ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    assert snapshot.canary_ingress["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    selectors = {
        s["metadata"]["name"]: s["spec"]["selector"]["batcomputer.io/version"]
        for s in snapshot.version_services
    }
    assert selectors == {"crime-v1-0-0": "1.0.0", "crime-v2-0-0": "2.0.0"}
    # Rolled back: the Ingress routes to the stable Service again, the split goes.
    failed = decide(model, replace(snapshot, measured=FAILING), CONFIG, T_LATER)
    back = decide(_recorded(model, failed), snapshot, CONFIG, T_LATER)
    assert [(w.kind, w.name, w.manifest is None) for w in back.writes] == [
        ("Service", "crime", False),
        ("Deployment", "crime-v1-0-0", False),
        ("Ingress", "crime", False),
        ("Ingress", "crime-canary", True),
        ("Service", "crime-v1-0-0", True),
        ("Service", "crime-v2-0-0", True),
        ("Deployment", "crime-v2-0-0", True),
    ]
    assert _backends(back.writes[2].manifest) == ["crime"]
