"""Canary and Shadow rules: the next action for every situation, the replica split and its
precision, the NGINX canary Ingress and Shadow's environment."""

import itertools
import json

import pytest

from batcomputer_operator.rollout import (
    NGINX_CANARY,
    NGINX_CANARY_WEIGHT,
    Action,
    Measurement,
    Progress,
    after,
    canary_ingress,
    next_action,
    recorded_progress,
    replica_split,
    rollout_status,
    routed_to,
    shadow_settings,
    stable_selector,
    version_service,
    weighted_by_ingress,
)
from batcomputer_operator.rollout_spec import parse_rollout
from batcomputer_server.shadow import Settings, parse_settings

CANARY = parse_rollout(
    {
        "strategy": "Canary",
        "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "1m"}],
        "analysis": {"maxErrorRatio": 0.01, "maxP99LatencySeconds": 0.5, "minRequests": 100},
    },
    replicas=10,
)
SHADOW = parse_rollout(
    {
        "strategy": "Shadow",
        "mirrorPercent": 50,
        "duration": "2m",
        "analysis": {"maxDisagreement": 0.02, "minRequests": 10},
    }
)
HEALTHY = Measurement(requests=200, errors=1, p99_seconds=0.05, disagreement=0.001)


def test_blue_green_promotes_at_once():
    decision = next_action(parse_rollout(None), 0, 0, Measurement())
    assert decision.action is Action.PROMOTE


def test_canary_waits_out_its_pause_then_advances():
    waiting = next_action(CANARY, 0, 10, HEALTHY)
    assert (waiting.action, waiting.step) == (Action.WAIT, 0)
    assert waiting.message == "canary step 1/2 at 10 %: analysing for 30s"
    assert waiting.recheck == 20
    advanced = next_action(CANARY, 0, 30, HEALTHY)
    assert (advanced.action, advanced.step) == (Action.ADVANCE, 1)
    assert advanced.message == "canary step 1/2 at 10 % passed; next 50 %"


def test_canary_promotes_after_its_last_step():
    assert next_action(CANARY, 1, 59.9, HEALTHY).action is Action.WAIT
    promoted = next_action(CANARY, 1, 60, HEALTHY)
    assert (promoted.action, promoted.step, promoted.failed_threshold) == (Action.PROMOTE, 1, None)


def test_too_few_requests_keep_the_step_waiting_past_its_pause():
    decision = next_action(CANARY, 0, 3600, Measurement(requests=99, p99_seconds=0.01))
    assert decision.action is Action.WAIT
    assert decision.message == "canary step 1/2 at 10 %: waiting for 100 requests"


def test_no_requests_never_promote_even_with_min_requests_zero():
    rollout = parse_rollout(
        {"strategy": "Canary", "steps": [{"weight": 5}], "analysis": {"minRequests": 0}},
        replicas=2,
    )
    assert next_action(rollout, 0, 3600, Measurement()).action is Action.WAIT
    assert next_action(rollout, 0, 3600, Measurement(requests=1)).action is Action.PROMOTE


@pytest.mark.parametrize(
    ("measured", "threshold", "message"),
    [
        (
            Measurement(requests=100, errors=2, p99_seconds=0.01),
            "maxErrorRatio",
            "maxErrorRatio: 2 of 100 requests failed (0.020), above 0.01",
        ),
        (
            Measurement(requests=100, errors=0, p99_seconds=0.75),
            "maxP99LatencySeconds",
            "maxP99LatencySeconds: p99 0.750s, above 0.5s",
        ),
        (
            # Errors are named first when both fail.
            Measurement(requests=100, errors=100, p99_seconds=9.0),
            "maxErrorRatio",
            "maxErrorRatio: 100 of 100 requests failed (1.000), above 0.01",
        ),
    ],
)
def test_canary_rolls_back_as_soon_as_a_threshold_fails(measured, threshold, message):
    # Within the pause, not at its end: a failing version goes at the next analysis.
    decision = next_action(CANARY, 1, 1, measured)
    assert (decision.action, decision.step) == (Action.ROLL_BACK, 1)
    assert (decision.failed_threshold, decision.message) == (threshold, message)


def test_thresholds_wait_for_min_requests():
    failing_early = Measurement(requests=99, errors=99, p99_seconds=9.0)
    assert next_action(CANARY, 0, 1, failing_early).action is Action.WAIT


def test_at_the_threshold_passes():
    exactly = Measurement(requests=100, errors=1, p99_seconds=0.5)
    assert next_action(CANARY, 0, 30, exactly).action is Action.ADVANCE


def test_canary_ignores_disagreement():
    measured = Measurement(requests=100, p99_seconds=0.01, disagreement=0.9)
    assert next_action(CANARY, 0, 30, measured).action is Action.ADVANCE


def test_no_latency_samples_do_not_fail_the_p99():
    measured = Measurement(requests=100, errors=0, p99_seconds=None)
    assert next_action(CANARY, 0, 30, measured).action is Action.ADVANCE


@pytest.mark.parametrize("step", [-1, 2, 10])
def test_a_step_out_of_range_is_a_programming_error(step):
    with pytest.raises(ValueError, match="is not one of the 2 canary steps"):
        next_action(CANARY, step, 0, HEALTHY)


def test_shadow_waits_its_duration_then_promotes():
    waiting = next_action(SHADOW, 0, 119, HEALTHY)
    assert waiting.action is Action.WAIT
    assert waiting.message == "shadow at 50 %: analysing for 120s"
    assert waiting.recheck == 1
    promoted = next_action(SHADOW, 0, 120, HEALTHY)
    assert (promoted.action, promoted.message) == (
        Action.PROMOTE,
        "shadow at 50 % passed; promoting",
    )


@pytest.mark.parametrize(
    ("measured", "threshold", "fragment"),
    [
        (
            Measurement(requests=10, disagreement=0.5),
            "maxDisagreement",
            "maxDisagreement: mean |Δp| 0.5000 on a flag, above 0.02",
        ),
        (
            Measurement(requests=10, errors=1, disagreement=0.0),
            "maxErrorRatio",
            "maxErrorRatio: 1 of 10 copies failed (0.100), above 0.01",
        ),
        (Measurement(requests=10, p99_seconds=2.0), "maxP99LatencySeconds", "p99 2.000s"),
    ],
)
def test_shadow_rolls_back_naming_the_threshold(measured, threshold, fragment):
    decision = next_action(SHADOW, 0, 5, measured)
    assert (decision.action, decision.failed_threshold) == (Action.ROLL_BACK, threshold)
    assert fragment in decision.message


def test_shadow_without_comparisons_yet_waits():
    assert next_action(SHADOW, 0, 500, Measurement(requests=9)).action is Action.WAIT


@pytest.mark.parametrize(
    ("weight", "replicas", "stable", "canary"),
    [
        (10, 10, 9, 1),
        (50, 10, 5, 5),
        (90, 10, 1, 9),
        (10, 2, 1, 1),  # one pod each is the closest two replicas get
        (50, 2, 1, 1),
        (99, 2, 1, 1),
        (1, 4, 3, 1),  # never 0: the canary always has a pod to measure
        (99, 4, 1, 3),  # never all: the stable version keeps a pod to fall back on
        (25, 4, 3, 1),
        (30, 4, 3, 1),
        (38, 4, 2, 2),  # 1.52 pods rounds to 2
        (12, 4, 3, 1),
        (50, 3, 1, 2),  # 1.5 pods rounds up
        (33, 3, 2, 1),
        (10, 0, 0, 0),  # a stopped model runs no pod
    ],
)
def test_replica_split(weight, replicas, stable, canary):
    split = replica_split(weight, replicas)
    assert (split.stable, split.canary) == (stable, canary)
    assert split.effective_weight == (100 * canary / replicas if replicas else 0)


def test_replica_split_precision_for_every_weight_and_replica_count():
    # The documented promise: the nearest multiple of 100/N %, clamped to one pod each.
    for weight, replicas in itertools.product(range(1, 100), range(2, 101)):
        split = replica_split(weight, replicas)
        assert split.stable + split.canary == replicas
        assert 1 <= split.canary <= replicas - 1
        step = 100 / replicas
        if step / 2 <= weight <= 100 - step / 2:
            assert abs(split.effective_weight - weight) <= step / 2 + 1e-9, (weight, replicas)
        else:
            assert split.canary in (1, replicas - 1), (weight, replicas)


@pytest.mark.parametrize(("weight", "replicas"), [(0, 4), (100, 4), (10, 1), (10, -1)])
def test_replica_split_refuses_what_cannot_split(weight, replicas):
    with pytest.raises(ValueError, match=r"outside 1\.\.99|at least 2 replicas"):
        replica_split(weight, replicas)


def test_stable_selector_takes_every_version():
    assert stable_selector("crime") == {"batcomputer.io/model": "crime"}


def test_version_service_selects_one_version():
    service = version_service("crime", "models", "crime-v1-4-2", "1.4.2")
    assert service["metadata"]["name"] == "crime-v1-4-2"
    assert service["spec"]["selector"] == {
        "batcomputer.io/model": "crime",
        "batcomputer.io/version": "1.4.2",
    }
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}
    ]


STABLE_INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {
        "name": "crime",
        "namespace": "models",
        "annotations": {"batcomputer.io/serving-version": "1.0.0"},
    },
    "spec": {
        "ingressClassName": "nginx",
        "rules": [
            {
                "host": "models.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/models/crime",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "crime", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ],
    },
}


def test_canary_ingress_carries_nginx_weight_and_routes_to_the_canary():
    canary = canary_ingress(STABLE_INGRESS, "crime-v2-0-0", 10)
    assert canary["metadata"]["name"] == "crime-canary"
    assert canary["metadata"]["annotations"][NGINX_CANARY] == "true"
    assert canary["metadata"]["annotations"][NGINX_CANARY_WEIGHT] == "10"
    assert canary["metadata"]["annotations"]["batcomputer.io/serving-version"] == "1.0.0"
    (rule,) = canary["spec"]["rules"]
    assert rule["host"] == "models.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/models/crime", "Prefix")
    assert path["backend"] == {"service": {"name": "crime-v2-0-0", "port": {"number": 80}}}
    assert canary["spec"]["ingressClassName"] == "nginx"
    # The stable Ingress given is left as it was.
    assert STABLE_INGRESS["metadata"]["name"] == "crime"
    assert NGINX_CANARY not in STABLE_INGRESS["metadata"]["annotations"]
    backend = STABLE_INGRESS["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == "crime"


def test_stable_ingress_routes_to_the_serving_versions_own_service():
    routed = routed_to(STABLE_INGRESS, "crime-v1-0-0")
    backend = routed["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "crime-v1-0-0", "port": {"number": 80}}}
    assert routed["metadata"] == STABLE_INGRESS["metadata"]


@pytest.mark.parametrize("weight", [0, 100])
def test_canary_ingress_weight_bounds(weight):
    with pytest.raises(ValueError):
        canary_ingress(STABLE_INGRESS, "crime-v2-0-0", weight)


@pytest.mark.parametrize(
    ("class_name", "weighted"),
    [("nginx", True), ("ingress-nginx", True), ("traefik", False), (None, False), ("", False)],
)
def test_only_nginx_classes_split_by_ingress(class_name, weighted):
    assert weighted_by_ingress(class_name) is weighted


def test_shadow_settings_only_while_a_shadow_runs():
    url = "http://crime-v2-0-0.models.svc"
    assert shadow_settings(SHADOW, url) == {"url": url, "percent": 50}
    assert shadow_settings(SHADOW, None) == {}
    assert shadow_settings(None, url) == {}
    assert shadow_settings(CANARY, url) == {}
    assert shadow_settings(parse_rollout(None), url) == {}


def test_shadow_settings_are_what_the_server_reads():
    settings = shadow_settings(SHADOW, "http://crime-v2-0-0.models.svc")
    assert parse_settings(json.dumps(settings).encode()) == Settings(
        "http://crime-v2-0-0.models.svc", 50.0
    )
    assert parse_settings(json.dumps(shadow_settings(None, None)).encode()) is None


def test_progress_round_trips_through_status():
    progress = Progress("2.0.0", 0, "2026-12-02T08:00:00Z")
    decision = next_action(CANARY, 0, 10, HEALTHY)
    status = rollout_status(CANARY, progress, decision, replica_split(10, 10))
    assert status == {
        "strategy": "Canary",
        "candidateVersion": "2.0.0",
        "stepIndex": 0,
        "stepStartedAt": "2026-12-02T08:00:00Z",
        "verdict": "Analysing",
        "message": "canary step 1/2 at 10 %: analysing for 30s",
        "step": "1/2",
        "weight": 10,
        "effectiveWeight": 10.0,
    }
    assert recorded_progress(status, "2.0.0") == progress


def test_an_advance_starts_the_next_step_now():
    progress = Progress("2.0.0", 0, "2026-12-02T08:00:00Z")
    decision = next_action(CANARY, 0, 30, HEALTHY)
    moved = after(progress, decision, "2026-12-02T08:00:31Z")
    assert moved == Progress("2.0.0", 1, "2026-12-02T08:00:31Z")
    status = rollout_status(CANARY, moved, decision, replica_split(50, 4))
    assert (status["step"], status["weight"], status["effectiveWeight"]) == ("2/2", 50, 50.0)
    waiting = next_action(CANARY, 1, 5, HEALTHY)
    assert after(moved, waiting, "2026-12-02T08:00:36Z") == moved


def test_a_rolled_back_status_names_the_threshold():
    progress = Progress("2.0.0", 1, "2026-12-02T08:00:00Z")
    decision = next_action(CANARY, 1, 1, Measurement(requests=100, errors=50))
    status = rollout_status(CANARY, progress, decision)
    assert (status["verdict"], status["failedThreshold"]) == ("RolledBack", "maxErrorRatio")
    assert "effectiveWeight" not in status


def test_shadow_status():
    progress = Progress("2.0.0", 0, "2026-12-02T08:00:00Z")
    status = rollout_status(SHADOW, progress, next_action(SHADOW, 0, 120, HEALTHY))
    assert (status["step"], status["mirrorPercent"], status["verdict"]) == (
        "shadow",
        50,
        "Promoted",
    )
    assert "weight" not in status


@pytest.mark.parametrize(
    "recorded",
    [
        None,
        "1/2",
        {},
        {"candidateVersion": "1.9.0", "stepIndex": 0, "stepStartedAt": "t"},  # another version
        {"candidateVersion": "2.0.0", "stepIndex": -1, "stepStartedAt": "t"},
        {"candidateVersion": "2.0.0", "stepIndex": True, "stepStartedAt": "t"},
        {"candidateVersion": "2.0.0", "stepIndex": "1", "stepStartedAt": "t"},
        {"candidateVersion": "2.0.0", "stepIndex": 0},
    ],
)
def test_unreadable_progress_starts_over(recorded):
    assert recorded_progress(recorded, "2.0.0") is None
