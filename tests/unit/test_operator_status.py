"""Status rules: when a version counts as rolled out, what counts as failure, kstatus conditions."""

import pytest
from _deployments import deployment_object

from batcomputer_operator.routing import current_pods
from batcomputer_operator.status import (
    Failure,
    Observed,
    build_status,
    deployment_failure,
    pod_failure,
    rollout_failure,
    status_differs,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def _pod(name, init=None, server=None):
    status = {}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "fetch", "ready": False, **init}]
    if server is not None:
        status["containerStatuses"] = [{"name": "server", **server}]
    return {"metadata": {"name": name}, "status": status}


def _terminated(code, message=None):
    terminated = {"exitCode": code, "reason": "Error" if code else "Completed"}
    if message is not None:
        terminated["message"] = message
    return terminated


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (3, "BlobNotFound"),
        (4, "AuthenticationFailed"),
        (5, "DigestMismatch"),
        (6, "StorageUnreachable"),
        (7, "InvalidBundle"),
        (1, "FetchFailed"),
    ],
)
def test_fetch_exit_code_names_the_reason(code, reason):
    pod = _pod("p-1", init={"state": {"terminated": _terminated(code, "the reason\n")}})
    assert pod_failure([pod]) == Failure(
        reason, f"fetch container of pod p-1 exited {code}: the reason"
    )


def test_fetch_failure_is_seen_while_it_backs_off():
    pod = _pod(
        "p-1",
        init={
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
            "lastState": {"terminated": _terminated(5, "sha256 mismatch for model.pkl")},
        },
    )
    assert pod_failure([pod]) == Failure(
        "DigestMismatch", "fetch container of pod p-1 exited 5: sha256 mismatch for model.pkl"
    )


def test_failure_is_found_in_any_pod_not_only_the_first():
    healthy = _pod(
        "a-pod",
        init={"state": {"terminated": _terminated(0)}},
        server={"ready": True, "state": {"running": {}}},
    )
    starting = _pod("b-pod", init={"state": {"running": {}}})
    failing = _pod("c-pod", init={"state": {"terminated": _terminated(3, "blob not found: x")}})
    failure = pod_failure([failing, healthy, starting])
    assert failure.reason == "BlobNotFound"
    assert "c-pod" in failure.message
    assert pod_failure([healthy, starting]) is None


def test_server_crash_loop_carries_the_last_log_line():
    pod = _pod(
        "p-1",
        init={"state": {"terminated": _terminated(0)}},
        server={
            "ready": False,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {
                "terminated": _terminated(
                    1, "Traceback...\n  File x\nValueError: lookup mismatch\n"
                )
            },
        },
    )
    assert pod_failure([pod]) == Failure(
        "ServerFailed", "server container of pod p-1 exited 1: ValueError: lookup mismatch"
    )


def test_a_recovered_server_is_not_a_failure():
    pod = _pod(
        "p-1",
        server={
            "ready": True,
            "state": {"running": {}},
            "lastState": {"terminated": _terminated(137)},
        },
    )
    assert pod_failure([pod]) is None


def test_image_pull_failure_is_a_failure():
    pod = _pod(
        "p-1",
        init={"state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}},
    )
    assert pod_failure([pod]) == Failure("ErrImagePull", "fetch container of pod p-1: not found")


def _past_deadline():
    deployment = deployment_object(ready=0)
    deployment["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "x" has timed out progressing.',
        }
    ]
    return deployment


def test_progress_deadline_is_a_failure():
    assert deployment_failure(_past_deadline()) == Failure(
        "ProgressDeadlineExceeded", 'ReplicaSet "x" has timed out progressing.'
    )
    assert deployment_failure(deployment_object()) is None


def test_progress_deadline_points_at_a_server_that_never_got_ready():
    unready = _pod(
        "p-2",
        init={"state": {"terminated": _terminated(0)}},
        server={"ready": False, "state": {"running": {}}},
    )
    failure = deployment_failure(_past_deadline(), [unready])
    assert failure.reason == "ProgressDeadlineExceeded"
    assert failure.message.endswith(
        "The server container of pod p-2 runs but never became ready: its /readyz says why."
    )


def test_replica_failure_is_a_failure():
    deployment = deployment_object(ready=0)
    deployment["status"]["conditions"] = [
        {"type": "ReplicaFailure", "status": "True", "message": 'pods "x" is forbidden: quota'}
    ]
    assert deployment_failure(deployment) == Failure(
        "ReplicaFailure", 'pods "x" is forbidden: quota'
    )


def test_conditions_of_a_generation_the_controller_has_not_seen_are_not_a_failure():
    # The template just changed: the deadline passed for the previous one, not this one.
    stale = _past_deadline()
    stale["metadata"]["generation"] = 4
    assert deployment_failure(stale) is None


TEMPLATE_HASH = "batcomputer.io/template-hash"
SELECTOR = {"batcomputer.io/model": "crime", "batcomputer.io/version": "1.4.2"}


def _rolling_out(template_hash):
    deployment = deployment_object(ready=0, updated=1, available=0)
    deployment["spec"]["selector"] = {"matchLabels": SELECTOR}
    deployment["spec"]["template"] = {"metadata": {"annotations": {TEMPLATE_HASH: template_hash}}}
    return deployment


def _of_template(pod, template_hash):
    pod["metadata"].update(labels=dict(SELECTOR), annotations={TEMPLATE_HASH: template_hash})
    return pod


def _auth_failing(name):
    return _pod(
        name,
        init={
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": _terminated(4, "authentication failed: no credentials")},
        },
    )


def test_a_replaced_templates_failing_pod_does_not_stall_the_new_template():
    # Credentials added to a crash-looping version: same Deployment, new pod template;
    # the old pod still crash-loops (or terminates) while the new one starts.
    deployment = _rolling_out("new0000000000000")
    old = _of_template(_auth_failing("crime-v1-4-2-old-a"), "old0000000000000")
    starting = _of_template(
        _pod("crime-v1-4-2-new-b", init={"state": {"running": {}}}), "new0000000000000"
    )
    legacy = _auth_failing("crime-v1-4-2-legacy-c")  # made before pods carried a digest
    legacy["metadata"]["labels"] = dict(SELECTOR)
    pods = [old, starting, legacy]
    assert current_pods(deployment, pods) == [starting]
    assert rollout_failure(deployment, pods) is None
    seen = _seen(ready_replicas=0, complete=False, serving_version=None)
    assert _conditions(build_status(seen, [], T0)) == {
        "Ready": ("False", "RollingOut"),
        "Reconciling": ("True", "RollingOut"),
        "Stalled": ("False", "RollingOut"),
    }


def test_a_current_templates_failing_pod_stalls_with_its_message():
    deployment = _rolling_out("new0000000000000")
    old = _of_template(_pod("a-old", init={"state": {"running": {}}}), "old0000000000000")
    failing = _of_template(_auth_failing("b-new"), "new0000000000000")
    failure = rollout_failure(deployment, [old, failing])
    assert failure == Failure(
        "AuthenticationFailed",
        "fetch container of pod b-new exited 4: authentication failed: no credentials",
    )
    seen = _seen(ready_replicas=0, complete=False, serving_version=None, failure=failure)
    status = build_status(seen, [], T0)
    assert _conditions(status)["Stalled"] == ("True", "AuthenticationFailed")
    assert status["conditions"][2]["message"] == failure.message


def test_the_deadline_message_points_only_at_a_current_pod():
    deployment = _rolling_out("new0000000000000")
    deployment["status"]["conditions"] = _past_deadline()["status"]["conditions"]
    unready_old = _of_template(
        _pod("a-old", server={"ready": False, "state": {"running": {}}}), "old0000000000000"
    )
    failure = rollout_failure(deployment, [unready_old])
    assert failure.message == 'ReplicaSet "x" has timed out progressing.'


def _seen(**changes):
    values = {
        "generation": 4,
        "desired_version": "1.4.2",
        "replicas": 2,
        "ready_replicas": 2,
        "complete": True,
        "answering": 2,
        "serving_version": "1.4.2",
        "failure": None,
        "url": "http://crime.models.svc/api",
        "ingress_path": None,
    }
    values.update(changes)
    return Observed(**values)


def _conditions(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_when_complete():
    status = build_status(_seen(), [], T0)
    assert _conditions(status) == {
        "Ready": ("True", "Serving"),
        "Reconciling": ("False", "Ready"),
        "Stalled": ("False", "Ready"),
    }
    assert status["observedGeneration"] == 4
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])
    # the 1.20 API server turns "" into null in a merge patch and then rejects it
    assert all(c["message"] for c in status["conditions"])
    assert status["servingVersion"] == "1.4.2"
    assert status["url"] == "http://crime.models.svc/api"
    assert status["ingressPath"] is None


def test_rolling_out_while_the_old_version_serves():
    seen = _seen(desired_version="1.5.0", ready_replicas=1, complete=False)
    status = build_status(seen, [], T0)
    assert _conditions(status) == {
        "Ready": ("False", "RollingOut"),
        "Reconciling": ("True", "RollingOut"),
        "Stalled": ("False", "RollingOut"),
    }
    ready = status["conditions"][0]
    assert (
        ready["message"] == "rolling out version 1.5.0: 1/2 replicas ready; 1.4.2 serves meanwhile"
    )


def test_scaling_the_serving_version():
    status = build_status(_seen(replicas=3, complete=False), [], T0)
    assert _conditions(status)["Reconciling"] == ("True", "Scaling")


def test_not_ready_until_the_service_endpoints_list_the_new_pods():
    # The Deployment is done and the Service selects it, but its Endpoints still list
    # the old pods: a request now would still reach 1.4.1.
    seen = _seen(answering=0, serving_version="1.4.1")
    status = build_status(seen, [], T0)
    assert _conditions(status) == {
        "Ready": ("False", "SwitchingTraffic"),
        "Reconciling": ("True", "SwitchingTraffic"),
        "Stalled": ("False", "SwitchingTraffic"),
    }
    assert status["conditions"][0]["message"] == (
        "switching traffic to version 1.4.2: 2/2 replicas ready, "
        "0/2 in the Service's endpoints; 1.4.1 serves meanwhile"
    )
    assert status["servingVersion"] == "1.4.1"
    first = build_status(_seen(answering=1, serving_version=None), [], T0)
    assert _conditions(first)["Reconciling"] == ("True", "SwitchingTraffic")
    assert first["conditions"][0]["message"].endswith("nothing serves meanwhile")


def test_scaling_waits_for_the_endpoints_too():
    status = build_status(_seen(replicas=3, ready_replicas=3, answering=2), [], T0)
    assert _conditions(status)["Reconciling"] == ("True", "Scaling")
    assert status["conditions"][0]["message"] == (
        "version 1.4.2 is scaling: 3/3 replicas ready, 2/3 in the Service's endpoints"
    )
    done = build_status(_seen(replicas=3, ready_replicas=3, answering=3), [], T0)
    assert _conditions(done)["Ready"] == ("True", "Serving")


def test_stalled_carries_the_failure():
    failure = Failure("DigestMismatch", "fetch container of pod p exited 5: sha256 mismatch")
    seen = _seen(desired_version="1.5.0", ready_replicas=0, complete=False, failure=failure)
    status = build_status(seen, [], T0)
    assert _conditions(status) == {
        "Ready": ("False", "DigestMismatch"),
        "Reconciling": ("False", "DigestMismatch"),
        "Stalled": ("True", "DigestMismatch"),
    }
    assert status["conditions"][2]["message"] == failure.message
    assert status["servingVersion"] == "1.4.2"


def test_zero_replicas_is_ready_and_stopped():
    seen = _seen(replicas=0, ready_replicas=0, answering=0, serving_version=None)
    status = build_status(seen, [], T0)
    assert _conditions(status)["Ready"] == ("True", "Stopped")
    assert status["servingVersion"] is None


def test_transition_time_moves_only_when_a_condition_flips():
    first = build_status(_seen(complete=False), [], T0)
    same = build_status(_seen(complete=False, ready_replicas=1), first["conditions"], T1)
    assert [c["lastTransitionTime"] for c in same["conditions"]] == [T0, T0, T0]
    done = build_status(_seen(), same["conditions"], T1)
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times == {"Ready": T1, "Reconciling": T1, "Stalled": T0}


def test_status_is_patched_only_when_it_changes():
    status = build_status(_seen(), [], T0)
    live = {key: value for key, value in status.items() if value is not None}
    assert not status_differs(status, live)
    assert status_differs(status, None)
    assert status_differs(status, {**live, "readyReplicas": 1})
    assert status_differs(status, {**live, "ingressPath": "/old"})
    newer = build_status(_seen(generation=5), status["conditions"], T1)
    assert status_differs(newer, live)
