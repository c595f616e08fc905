"""Traffic rules of a blue/green rollout: completeness, routing, retirement, ready backends."""

import pytest
from _deployments import deployment_object

from batcomputer_operator.routing import (
    answering_pods,
    ready_backends,
    rollout_complete,
    route_target,
    routed_deployment,
    serving_deployment,
    to_retire,
)


def test_rollout_complete_when_every_replica_is_updated_and_ready():
    assert rollout_complete(deployment_object())


@pytest.mark.parametrize(
    "changes",
    [
        {"observed": 2},  # the controller has not seen the latest template yet
        {"ready": 1, "available": 1},
        {"updated": 1},  # an old-template pod still counts as ready
        {"total": 3},  # a surge pod is still around
        {"replicas": 3},
    ],
)
def test_rollout_not_complete(changes):
    assert not rollout_complete(deployment_object(**changes))
    assert not rollout_complete(None)


def test_zero_replicas_is_complete_once_no_pod_runs_observed_or_not():
    created = {"metadata": {"generation": 1}, "spec": {"replicas": 0}, "status": {}}
    assert rollout_complete(created)
    scaling_down = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2},
    }
    assert not rollout_complete(scaling_down)
    scaling_down["status"]["observedGeneration"] = 4
    assert not rollout_complete(scaling_down)  # its pods are still stopping
    scaling_down["status"] = {"observedGeneration": 4}
    assert rollout_complete(scaling_down)


def _version(name, version, complete):
    deployment = deployment_object() if complete else deployment_object(ready=0, available=0)
    deployment["metadata"].update(
        name=name, labels={"batcomputer.io/model": "crime", "batcomputer.io/version": version}
    )
    return deployment


def _service(version):
    return {
        "spec": {"selector": {"batcomputer.io/model": "crime", "batcomputer.io/version": version}}
    }


def test_the_service_routes_to_the_deployment_its_selector_matches():
    old, new = _version("crime-v1", "1.0.0", True), _version("crime-v2", "2.0.0", False)
    assert routed_deployment(_service("1.0.0"), [new, old]) is old
    assert routed_deployment(_service("6.6.6"), [new, old]) is None
    assert routed_deployment(None, [new, old]) is None


def test_the_service_stays_on_the_old_version_until_the_new_one_is_complete():
    old, new = _version("crime-v1", "1.0.0", True), _version("crime-v2", "2.0.0", False)
    assert route_target(new, old) is old
    assert to_retire([old, new], [new, old, old]) == []
    done = _version("crime-v2", "2.0.0", True)
    assert route_target(done, old) is done
    # The Service now selects 2.0.0 but its Endpoints still send traffic to 1.0.0.
    assert to_retire([old, done], [done, done, old]) == []
    assert to_retire([old, done], [done, done, done]) == [old]


def test_a_first_version_is_routed_to_before_it_is_ready():
    first = _version("crime-v1", "1.0.0", False)
    assert route_target(first, None) is first


def test_reverting_routes_back_at_once_and_drops_the_failed_version():
    serving, failing = _version("crime-v1", "1.0.0", True), _version("crime-v2", "2.0.0", False)
    assert route_target(serving, serving) is serving
    assert to_retire([serving, failing], [serving, serving, serving]) == [failing]


def test_an_abandoned_failing_version_goes_while_the_old_one_keeps_serving():
    serving = _version("crime-v1", "1.0.0", True)
    abandoned = _version("crime-v2", "2.0.0", False)
    pending = _version("crime-v3", "3.0.0", False)
    target = route_target(pending, serving)
    assert target is serving
    assert to_retire([serving, abandoned, pending], [pending, target, None]) == [abandoned]


def _with_selector(deployment):
    labels = deployment["metadata"]["labels"]
    deployment["spec"]["selector"] = {"matchLabels": labels}
    return deployment


def _server_pod(uid, version):
    labels = {"batcomputer.io/model": "crime", "batcomputer.io/version": version}
    return {"metadata": {"name": f"pod-{uid}", "uid": uid, "labels": labels}}


def _slice(ready=(), unready=(), unknown=()):
    def endpoint(uid, conditions):
        reference = {"kind": "Pod", "name": f"pod-{uid}", "uid": uid}
        return {"addresses": ["10.244.0.9"], "conditions": conditions, "targetRef": reference}

    return {
        "metadata": {"name": "crime-x7k2p", "labels": {"kubernetes.io/service-name": "crime"}},
        "endpoints": [endpoint(uid, {"ready": True}) for uid in ready]
        + [endpoint(uid, {"ready": False}) for uid in unready]
        + [endpoint(uid, {}) for uid in unknown],
    }


def _endpoints(ready=(), unready=(), unknown=()):
    return ready_backends([_slice(ready, unready, unknown)])


def test_endpoints_tell_which_version_answers():
    old = _with_selector(_version("crime-v1", "1.0.0", True))
    new = _with_selector(_version("crime-v2", "2.0.0", True))
    pods = [_server_pod("a", "1.0.0"), _server_pod("b", "2.0.0"), _server_pod("c", "2.0.0")]
    # Right after the selector switch the endpoints controller has not caught up yet.
    stale = _endpoints(ready=["a"])
    assert (answering_pods(stale, pods, old), answering_pods(stale, pods, new)) == (1, 0)
    assert serving_deployment(stale, pods, [new, old]) is old
    caught_up = _endpoints(ready=["b", "c"])
    assert answering_pods(caught_up, pods, new) == 2
    assert serving_deployment(caught_up, pods, [old, new]) is new


def test_only_ready_addresses_of_known_pods_count():
    new = _with_selector(_version("crime-v2", "2.0.0", True))
    pods = [_server_pod("b", "2.0.0"), _server_pod("c", "2.0.0")]
    assert answering_pods(_endpoints(ready=["b"], unready=["c"]), pods, new) == 1
    assert answering_pods(_endpoints(ready=["gone"]), pods, new) == 0
    # A condition left out means ready, as the EndpointSlice API defines it.
    assert answering_pods(_endpoints(unknown=["b"]), pods, new) == 1
    no_ref = ready_backends([{"endpoints": [{"addresses": ["10.244.0.9"]}]}])
    assert answering_pods(no_ref, pods, new) == 0
    # No EndpointSlice yet, or none listing a pod: nothing serves.
    assert serving_deployment(ready_backends([]), pods, [new]) is None
    assert serving_deployment(ready_backends([{"endpoints": None}]), pods, [new]) is None


def test_slices_of_one_service_add_up():
    new = _with_selector(_version("crime-v2", "2.0.0", True))
    pods = [_server_pod("b", "2.0.0"), _server_pod("c", "2.0.0")]
    backends = ready_backends([_slice(ready=["b"]), _slice(ready=["c"])])
    assert answering_pods(backends, pods, new) == 2
