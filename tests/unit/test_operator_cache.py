"""The watch cache, the requeue timings and the Lease rules: pure parts of the control loop."""

import datetime
import itertools
import random

from batcomputer_operator import requeue
from batcomputer_operator.cache import Cache
from batcomputer_operator.events import EventLimiter, event
from batcomputer_operator.leader import Timings, claim


def _obj(name, version, *, model="crime", namespace="models", labels=None):
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": str(version),
            "labels": {"batcomputer.io/model": model} if labels is None else labels,
        }
    }


def test_objects_are_found_by_the_model_they_belong_to():
    cache = Cache()
    assert cache.put("Pod", _obj("crime-a", 5))
    assert cache.put("Pod", _obj("fraud-a", 6, model="fraud"))
    assert cache.put("Pod", _obj("crime-a", 5, namespace="other"))
    assert [p["metadata"]["name"] for p in cache.of_model("Pod", "models", "crime")] == ["crime-a"]
    slice_labels = {"kubernetes.io/service-name": "crime"}
    cache.put("EndpointSlice", _obj("crime-x1", 7, labels=slice_labels))
    assert len(cache.of_model("EndpointSlice", "models", "crime")) == 1
    cache.remove("Pod", "models", "crime-a")
    assert cache.of_model("Pod", "models", "crime") == []
    assert cache.sizes() == {"Pod": 2, "EndpointSlice": 1}


def test_a_late_write_response_never_undoes_a_newer_watch_event():
    cache = Cache()
    assert cache.put("Deployment", _obj("crime-v1", 12))
    assert not cache.put("Deployment", _obj("crime-v1", 11))
    assert not cache.put("Deployment", _obj("crime-v1", 12))
    assert cache.get("Deployment", "models", "crime-v1")["metadata"]["resourceVersion"] == "12"


def test_a_relabelled_object_moves_to_its_new_model():
    cache = Cache()
    cache.put("Pod", _obj("p", 1))
    cache.put("Pod", _obj("p", 2, model="fraud"))
    assert cache.of_model("Pod", "models", "crime") == []
    assert len(cache.of_model("Pod", "models", "fraud")) == 1


def test_a_relist_replaces_one_namespace_and_reports_what_changed():
    cache = Cache()
    cache.put("Pod", _obj("kept", 1))
    cache.put("Pod", _obj("gone", 2))
    cache.put("Pod", _obj("elsewhere", 3, namespace="other"))
    changed = cache.replace("Pod", "models", [_obj("kept", 1), _obj("new", 4)])
    assert sorted(o["metadata"]["name"] for o in changed) == ["gone", "new"]
    assert sorted(key[1] for key in cache.keys("Pod")) == ["elsewhere", "kept", "new"]


def test_errors_back_off_exponentially_with_jitter_up_to_a_cap():
    rng = random.Random(7)
    delays = [requeue.backoff(n, rng) for n in range(12)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(later > earlier for earlier, later in itertools.pairwise(delays[:9]))
    assert max(delays) <= requeue.CAP_SECONDS
    assert requeue.backoff(1000, rng) <= requeue.CAP_SECONDS


def test_resyncs_are_spread_out():
    rng = random.Random(3)
    spread = {round(requeue.resync(600, rng)) for _ in range(50)}
    assert len(spread) > 20
    assert min(spread) >= 480 and max(spread) <= 720


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _lease(holder, transitions=3):
    spec = {
        "holderIdentity": holder,
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-12-31T23:00:00.000000Z",
        "renewTime": "2025-12-31T23:59:59.000000Z",
        "leaseTransitions": transitions,
    }
    return {"metadata": {"name": "batcomputer-operator"}, "spec": spec}


def test_a_free_lease_is_taken():
    spec = claim(None, "me", Timings(), expired=False, wall_now=NOW)
    assert spec["holderIdentity"] == "me"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["renewTime"] == spec["acquireTime"] == "2026-01-01T00:00:00.000000Z"
    assert (
        claim(_lease(None), "me", Timings(), expired=False, wall_now=NOW)["leaseTransitions"] == 3
    )


def test_a_held_lease_is_taken_only_once_expired():
    assert claim(_lease("other"), "me", Timings(), expired=False, wall_now=NOW) is None
    taken = claim(_lease("other"), "me", Timings(), expired=True, wall_now=NOW)
    assert taken["holderIdentity"] == "me" and taken["leaseTransitions"] == 4


def test_the_holder_renews_keeping_its_acquire_time():
    renewed = claim(_lease("me"), "me", Timings(), expired=False, wall_now=NOW)
    assert renewed["acquireTime"] == "2025-12-31T23:00:00.000000Z"
    assert renewed["renewTime"] == "2026-01-01T00:00:00.000000Z"
    assert renewed["leaseTransitions"] == 3


def test_events_are_limited_per_object_and_in_total():
    now = [0.0]
    limiter = EventLimiter(clock=lambda: now[0])
    assert sum(limiter.allow("a") for _ in range(40)) == 25  # client-go's burst per object
    now[0] += 300
    assert limiter.allow("a") and not limiter.allow("a")  # then one per 5 minutes
    # 1,000 objects at once: the shared budget stops the flood.
    posted = sum(limiter.allow(f"model-{i}") for i in range(1000) for _ in range(3))
    assert posted <= 100
    now[0] += 10
    assert sum(limiter.allow(f"late-{i}") for i in range(100)) == 50  # 5 a second


def test_an_event_names_its_batmodel():
    model = {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": "crime", "namespace": "models", "uid": "u1"},
    }
    body = event(model, "Stalled", "x" * 5000, warning=True, now="2026-01-01T00:00:00Z")
    assert body["involvedObject"] == {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "name": "crime",
        "namespace": "models",
        "uid": "u1",
    }
    assert (body["type"], body["reason"], len(body["message"])) == ("Warning", "Stalled", 1024)
    assert body["metadata"] == {"generateName": "crime.", "namespace": "models"}
