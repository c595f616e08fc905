"""Shadow from snapshots: the candidate at full size behind its own Service, which no
caller reaches; the serving version's shadow settings naming it once it is ready; the
analysis promoting after the duration or rolling back naming the threshold; and the
settings emptied after either, so no version copies once the rollout is over."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from batcomputer_dev.gitops_health import argocd_health, kstatus
from batcomputer_operator import manifests, shadow
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.decide import Snapshot, decide
from batcomputer_operator.rollout import Measurement
from batcomputer_operator.spec import parse_spec

CONFIG = OperatorConfig(server_image="registry.local/server:1")
OWNER = manifests.Owner("crime", "models", "uid-crime")
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/"
LUA = (
    Path(__file__).resolve().parents[2] / "examples" / "gitops" / "argocd" / "batmodel-health.lua"
).read_text()
T0 = "2026-01-01T00:00:00Z"
SHADOW = {
    "strategy": "Shadow",
    "mirrorPercent": 50,
    "duration": "20s",
    "analysis": {
        "maxDisagreement": 0.05,
        "maxErrorRatio": 0.05,
        "maxP99LatencySeconds": 0.5,
        "minRequests": 10,
    },
}
AGREEING = Measurement(
    requests=100, errors=0, p99_seconds=0.02, disagreement=0.001, counting_since=T0
)
COPIES = {"url": "http://10.96.0.20:80", "percent": 50}
# The address the API server gives each Service the plans create.
CLUSTER_IPS = {"crime": "10.96.0.10", "crime-v2-0-0": "10.96.0.20"}


def _spec(version, rollout=SHADOW, **extra):
    return {"version": version, "replicas": 2, "source": {"uri": URI + version}, **extra} | (
        {"rollout": rollout} if rollout else {}
    )


def _complete(deployment):
    live = copy.deepcopy(deployment)
    replicas = live["spec"]["replicas"]
    live["metadata"].setdefault("generation", 1)
    live["status"] = {
        "observedGeneration": live["metadata"]["generation"],
        **dict.fromkeys(
            ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"), replicas
        ),
    }
    return live


def _pod(deployment, uid):
    return {
        "metadata": {
            "name": f"{deployment['metadata']['name']}-{uid}",
            "uid": uid,
            "labels": dict(deployment["spec"]["template"]["metadata"]["labels"]),
        },
        "status": {"containerStatuses": [{"name": "server", "ready": True, "state": {}}]},
    }


def _serving(**extra):
    """1.0.0 serving, its pod behind the Service."""
    deployment = _complete(manifests.deployment(OWNER, parse_spec(_spec("1.0.0")), CONFIG))
    spec = parse_spec(_spec("1.0.0", **extra))
    return Snapshot(
        deployments=(deployment,),
        service=manifests.service(OWNER, "1.0.0"),
        ingress=manifests.ingress(OWNER, spec, CONFIG, "1.0.0"),
        pods=(_pod(deployment, "p1"),),
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


def _landed(snapshot, plan, *, ready=True):
    """The snapshot after `plan`'s writes, Deployments rolled out when `ready`."""
    children = {
        "Deployment": {d["metadata"]["name"]: d for d in snapshot.deployments},
        "Service": {
            s["metadata"]["name"]: s for s in (snapshot.service, *snapshot.version_services)
        },
        "Ingress": {"crime": snapshot.ingress} if snapshot.ingress else {},
        "ConfigMap": {c["metadata"]["name"]: c for c in snapshot.shadow_configs},
    }
    for write in plan.writes:
        if write.manifest is None:
            children[write.kind].pop(write.name)
            continue
        landed = copy.deepcopy(write.manifest)
        if write.kind == "Service":
            landed["spec"]["clusterIP"] = CLUSTER_IPS[write.name]
        if write.kind == "Deployment":
            landed["metadata"]["generation"] = 1
            landed = _complete(landed) if ready else {**landed, "status": {}}
        children[write.kind][write.name] = landed
    deployments = children["Deployment"]
    services = children["Service"]
    return replace(
        snapshot,
        deployments=tuple(deployments.values()),
        desired_holder=deployments.get("crime-v2-0-0"),
        service=services.pop("crime"),
        version_services=tuple(services.values()),
        ingress=children["Ingress"].get("crime"),
        shadow_configs=tuple(children["ConfigMap"].values()),
    )


def _settled(model, snapshot, now=T0):
    """Decide and land until a plan has nothing left to write; every plan made."""
    plans = []
    for _ in range(6):
        plan = decide(model, snapshot, CONFIG, now)
        plans.append(plan)
        if not plan.writes:
            return plans, snapshot
        snapshot = _landed(snapshot, plan)
    raise AssertionError(f"no settled plan: {[p.writes for p in plans]}")


def _recorded(model, plan):
    return {**model, "status": plan.status}


def _settings(snapshot):
    """Each shadow ConfigMap's settings, by name."""
    return {
        c["metadata"]["name"]: json.loads(c["data"]["settings.json"])
        for c in snapshot.shadow_configs
    }


def _stable_on_serving(snapshot):
    """The stable Service and Ingress route to 1.0.0's pods alone."""
    assert snapshot.service == manifests.service(OWNER, "1.0.0")
    if snapshot.ingress is not None:
        paths = snapshot.ingress["spec"]["rules"][0]["http"]["paths"]
        assert [p["backend"]["service"]["name"] for p in paths] == ["crime"]


def _copying(**extra):
    """The shadow under analysis: the candidate ready, 1.0.0 copying to it."""
    model = _model(_spec("2.0.0", **extra))
    plans, snapshot = _settled(model, _serving(**extra))
    return _recorded(model, plans[-1]), snapshot, plans


def test_a_shadow_starts_the_candidate_beside_the_serving_version_answering_no_caller():
    model = _model(_spec("2.0.0"))
    first = decide(model, _serving(), CONFIG, T0)
    assert [(w.kind, w.name) for w in first.writes] == [
        ("Deployment", "crime-v2-0-0"),
        ("Service", "crime-v2-0-0"),
    ]
    assert first.writes[0].manifest["spec"]["replicas"] == 2
    assert first.writes[1].manifest["spec"]["selector"]["batcomputer.io/version"] == "2.0.0"
    rollout = first.status["rollout"]
    assert (rollout["strategy"], rollout["step"], rollout["mirrorPercent"]) == (
        "Shadow",
        "shadow",
        50,
    )
    assert rollout["verdict"] == "Analysing"
    assert rollout["message"] == "shadow at 50 %: waiting for 2 pods of version 2.0.0 to get copies"
    # Not ready yet: no copies for it.
    pending = _landed(_serving(), first, ready=False)
    assert decide(model, pending, CONFIG, T0).writes == ()
    assert pending.shadow_configs == ()


def test_once_the_candidate_is_ready_the_serving_version_copies_to_its_service():
    _, snapshot, plans = _copying()
    copying = [w for plan in plans for w in plan.writes if w.kind == "ConfigMap"]
    assert [(w.name, w.step.reason) for w in copying] == [("crime-v1-0-0-shadow", "ShadowCopying")]
    assert _settings(snapshot) == {"crime-v1-0-0-shadow": COPIES}
    config = snapshot.shadow_configs[0]
    assert config["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert config["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "batcomputer-operator"
    _stable_on_serving(snapshot)
    assert plans[-1].status["servingVersion"] == "1.0.0"
    conditions = {c["type"]: c["status"] for c in plans[-1].status["conditions"]}
    assert (conditions["Ready"], conditions["Reconciling"], conditions["Stalled"]) == (
        "False",
        "True",
        "False",
    )


@pytest.mark.parametrize("data", [{"settings.json": "{not json"}, {}, {"settings.json": "{}"}])
def test_settings_edited_by_hand_are_put_back(data):
    model, snapshot, _ = _copying()
    edited = copy.deepcopy(snapshot.shadow_configs[0])
    edited["data"] = data
    plan = decide(model, replace(snapshot, shadow_configs=(edited,)), CONFIG, T0)
    assert [(w.kind, w.name) for w in plan.writes] == [("ConfigMap", "crime-v1-0-0-shadow")]
    assert json.loads(plan.writes[0].manifest["data"]["settings.json"]) == COPIES


def test_the_candidate_is_never_selected_by_the_stable_service_or_ingress():
    ingress = {"ingress": {"path": "/crime", "className": "nginx"}}
    model, snapshot, plans = _copying(**ingress)
    written = [w for plan in plans for w in plan.writes]
    assert {(w.kind, w.name) for w in written} == {
        ("Deployment", "crime-v2-0-0"),
        ("Service", "crime-v2-0-0"),
        ("ConfigMap", "crime-v1-0-0-shadow"),
    }
    _stable_on_serving(snapshot)
    measured = replace(snapshot, measured=AGREEING)
    for now in ("2026-01-01T00:00:05Z", "2026-01-01T00:00:10Z"):
        plan = decide(model, measured, CONFIG, now)
        assert plan.writes == ()
        assert plan.status["rollout"]["message"] == "shadow at 50 %: analysing for 20s"
    assert snapshot.canary_ingress is None


def test_after_the_duration_it_is_promoted_and_no_version_copies_any_more():
    model, snapshot, _ = _copying()
    early = decide(model, replace(snapshot, measured=AGREEING), CONFIG, "2026-01-01T00:00:04Z")
    assert early.status["rollout"]["verdict"] == "Analysing"
    assert early.recheck == 5.0
    promoted = decide(model, replace(snapshot, measured=AGREEING), CONFIG, "2026-01-01T00:00:21Z")
    assert promoted.writes == ()
    assert promoted.status["rollout"]["verdict"] == "Promoted"
    assert promoted.recheck == 0
    model = _recorded(model, promoted)
    switching = decide(model, snapshot, CONFIG, "2026-01-01T00:00:22Z")
    assert [(w.kind, w.name, w.step.reason) for w in switching.writes] == [
        ("ConfigMap", "crime-v1-0-0-shadow", "ShadowStopped"),
        ("Service", "crime", "Promoted"),
    ]
    snapshot = _landed(snapshot, switching)
    assert _settings(snapshot) == {"crime-v1-0-0-shadow": {}}
    assert snapshot.service["spec"]["selector"]["batcomputer.io/version"] == "2.0.0"
    # Blue/green from here on: the candidate's own Service goes; 1.0.0 and its settings
    # once the endpoints no longer list its pod.
    after = decide(model, snapshot, CONFIG, "2026-01-01T00:00:23Z")
    assert [(w.kind, w.name, w.manifest) for w in after.writes] == [
        ("Service", "crime-v2-0-0", None)
    ]
    snapshot = replace(_landed(snapshot, after), backends=frozenset())
    retiring = decide(model, snapshot, CONFIG, "2026-01-01T00:00:24Z")
    assert [(w.kind, w.name, w.manifest) for w in retiring.writes] == [
        ("Deployment", "crime-v1-0-0", None),
        ("ConfigMap", "crime-v1-0-0-shadow", None),
    ]
    snapshot = _landed(snapshot, retiring)
    # The promoted version has no settings of its own: it never copies to itself.
    assert snapshot.shadow_configs == ()
    assert [d["metadata"]["name"] for d in snapshot.deployments] == ["crime-v2-0-0"]
    assert decide(model, snapshot, CONFIG, "2026-01-01T00:00:25Z").writes == ()


@pytest.mark.parametrize(
    ("measured", "threshold", "message"),
    [
        (
            replace(AGREEING, disagreement=0.2),
            "maxDisagreement",
            "maxDisagreement: mean |Δp| 0.2000 on a flag, above 0.05",
        ),
        (
            replace(AGREEING, errors=30),
            "maxErrorRatio",
            "maxErrorRatio: 30 of 100 copies failed (0.300), above 0.05",
        ),
        (
            replace(AGREEING, p99_seconds=2.0),
            "maxP99LatencySeconds",
            "maxP99LatencySeconds: p99 2.000s, above 0.5s",
        ),
    ],
)
def test_a_failing_shadow_is_rolled_back_naming_the_threshold(measured, threshold, message):
    model, snapshot, _ = _copying()
    failed = decide(model, replace(snapshot, measured=measured), CONFIG, "2026-01-01T00:00:05Z")
    assert failed.writes == ()
    assert failed.recheck == 0
    assert failed.stalled and not failed.ready
    conditions = {c["type"]: (c["status"], c["reason"]) for c in failed.status["conditions"]}
    assert conditions["Stalled"] == ("True", "AnalysisFailed")
    assert [(s.reason, s.warning) for s in failed.transitions] == [("AnalysisFailed", True)]
    assert message in failed.transitions[0].message
    assert (failed.status["rollout"]["verdict"], failed.status["rollout"]["failedThreshold"]) == (
        "RolledBack",
        threshold,
    )
    model = _recorded(model, failed)
    back = decide(model, snapshot, CONFIG, "2026-01-01T00:00:06Z")
    assert [(w.kind, w.name, w.manifest is None) for w in back.writes] == [
        ("ConfigMap", "crime-v1-0-0-shadow", False),
        ("Service", "crime-v2-0-0", True),
        ("Deployment", "crime-v2-0-0", True),
    ]
    snapshot = _landed(snapshot, back)
    assert _settings(snapshot) == {"crime-v1-0-0-shadow": {}}
    _stable_on_serving(snapshot)
    assert [d["metadata"]["name"] for d in snapshot.deployments] == ["crime-v1-0-0"]
    settled = decide(model, snapshot, CONFIG, "2026-01-01T00:00:07Z")
    assert settled.writes == ()
    assert settled.status["servingVersion"] == "1.0.0"
    assert settled.transitions == ()


def test_the_duration_runs_from_the_first_copy_counted_not_from_the_rollouts_start():
    # The serving pods get their settings from the kubelet up to a minute after the write.
    model, snapshot, _ = _copying()
    none_yet = decide(
        model, replace(snapshot, measured=Measurement()), CONFIG, "2026-01-01T00:01:00Z"
    )
    assert none_yet.status["rollout"]["verdict"] == "Analysing"
    late = replace(AGREEING, counting_since="2026-01-01T00:01:05Z")
    within = decide(model, replace(snapshot, measured=late), CONFIG, "2026-01-01T00:01:20Z")
    assert within.status["rollout"]["verdict"] == "Analysing"
    assert within.recheck == 5.0
    over = decide(model, replace(snapshot, measured=late), CONFIG, "2026-01-01T00:01:26Z")
    assert over.status["rollout"]["verdict"] == "Promoted"


def test_too_few_copies_wait_past_the_duration():
    model, snapshot, _ = _copying()
    few = replace(snapshot, measured=Measurement(requests=3, errors=3, counting_since=T0))
    plan = decide(model, few, CONFIG, "2026-01-01T00:01:00Z")
    assert plan.writes == () and not plan.stalled
    assert plan.status["rollout"]["message"] == "shadow at 50 %: waiting for 10 requests"
    unmeasured = decide(model, snapshot, CONFIG, "2026-01-01T00:01:00Z")
    assert unmeasured.status["rollout"]["verdict"] == "Analysing"


def test_a_candidate_that_stops_being_ready_gets_no_copies():
    model, snapshot, _ = _copying()
    candidate = snapshot.desired_holder
    template = candidate["spec"]["template"]["metadata"]
    crashing = {
        "metadata": {
            "name": "crime-v2-0-0-c1",
            "uid": "c1",
            "labels": dict(template["labels"]),
            "annotations": dict(template["annotations"]),
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
    unready = {**candidate, "status": {**candidate["status"], "readyReplicas": 1}}
    broken = replace(
        snapshot,
        deployments=tuple(
            unready if d["metadata"]["name"] == "crime-v2-0-0" else d for d in snapshot.deployments
        ),
        desired_holder=unready,
        pods=(*snapshot.pods, crashing),
    )
    plan = decide(model, broken, CONFIG, "2026-01-01T00:00:05Z")
    assert [(w.kind, w.name, w.step.reason) for w in plan.writes] == [
        ("ConfigMap", "crime-v1-0-0-shadow", "ShadowStopped")
    ]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    assert conditions["Stalled"] == ("True", "CrashLoopBackOff")
    assert plan.status["servingVersion"] == "1.0.0"


def test_a_first_shadow_rollout_has_nothing_to_compare_with_and_goes_blue_green():
    plan = decide(_model(_spec("2.0.0")), Snapshot(), CONFIG, T0)
    assert [(w.kind, w.name) for w in plan.writes] == [
        ("Service", "crime"),
        ("Deployment", "crime-v2-0-0"),
    ]
    assert plan.status["rollout"] is None


def test_settings_left_by_a_shadow_are_emptied_when_the_strategy_changes():
    model, snapshot, _ = _copying()
    blue_green = {**model, "spec": _spec("2.0.0", rollout=None)}
    plan = decide(blue_green, snapshot, CONFIG, "2026-01-01T00:00:05Z")
    writes = [(w.kind, w.name, w.step.reason) for w in plan.writes]
    assert ("ConfigMap", "crime-v1-0-0-shadow", "ShadowStopped") in writes
    assert ("Service", "crime-v2-0-0", "ServiceDeleted") in writes


@pytest.mark.parametrize(
    ("cluster_ip", "url"),
    [
        ("10.96.0.20", "http://10.96.0.20:80"),
        ("fd00::20", "http://[fd00::20]:80"),
        (None, None),
        ("", None),
        ("None", None),  # a headless Service: no address to copy to
        ("crime.models.svc", None),
        ("10.96.0.20/../evil", None),
    ],
)
def test_copies_go_to_the_candidate_services_cluster_ip(cluster_ip, url):
    service = {"metadata": {"name": "crime-v2-0-0"}, "spec": {"clusterIP": cluster_ip}}
    assert shadow.candidate_url(service) == url


def test_a_candidate_service_without_an_address_gets_no_copies_yet():
    model, snapshot, _ = _copying()
    (service,) = snapshot.version_services
    addressless = copy.deepcopy(service)
    del addressless["spec"]["clusterIP"]
    unaddressed = replace(snapshot, version_services=(addressless,), shadow_configs=())
    plan = decide(model, unaddressed, CONFIG, "2026-01-01T00:00:05Z")
    assert plan.writes == ()
    assert plan.status["rollout"]["verdict"] == "Analysing"
    assert "waiting for 2 pods of version 2.0.0 to get copies" in plan.status["rollout"]["message"]


def test_argo_cd_and_flux_see_the_analysis_progressing_and_a_rollback_degraded():
    model, snapshot, _ = _copying()
    analysing = decide(model, replace(snapshot, measured=AGREEING), CONFIG, T0)
    seen = {**model, "status": analysing.status}
    assert argocd_health(seen, LUA, "lua54").status == "Progressing"
    assert kstatus(seen).status == "InProgress"
    failed = replace(AGREEING, disagreement=0.2)
    rolled_back = decide(model, replace(snapshot, measured=failed), CONFIG, T0)
    seen = {**model, "status": rolled_back.status}
    health = argocd_health(seen, LUA, "lua54")
    assert health.status == "Degraded"
    assert "maxDisagreement" in health.message
    assert kstatus(seen).status == "Failed"
