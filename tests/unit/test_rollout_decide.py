"""The operator never rolls out a Canary or Shadow BatModel some other way: while it
carries out BlueGreen only, such a spec is refused in status and nothing is written, so
the version that serves keeps serving."""

import pytest

from batcomputer_operator import manifests
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.decide import Snapshot, decide
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
            {"strategy": "Canary", "steps": [{"weight": 25}, {"weight": 50}]},
            "spec.rollout.strategy: Canary is a valid rollout, but this operator carries out "
            "BlueGreen only; nothing is deployed for it",
        ),
        ({"strategy": "Shadow", "mirrorPercent": 10}, "Shadow is a valid rollout"),
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
