"""Whether a BatModel pins its bundle: the Pinned condition and the refusal of unpinned ones."""

from batcomputer_operator import status
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.decide import Snapshot, decide
from batcomputer_operator.pinning import pinning, refusal
from batcomputer_operator.spec import parse_spec

URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/1.4.2"
DIGEST = "sha256:" + "ab" * 32


def _spec(**source):
    return parse_spec({"version": "1.4.2", "source": {"uri": URI, **source}})


def test_a_bundle_digest_pins_the_whole_bundle():
    pin = pinning(_spec(digest=DIGEST))
    assert (pin.pinned, pin.reason) == (True, "BundleDigest")
    assert DIGEST in pin.message
    assert refusal(pin, require_pinned=True) is None


def test_per_file_pins_alone_leave_bundle_json_and_model_onnx_open():
    pin = pinning(_spec(sha256={"model.pkl": "cd" * 32, "flags.pkl": "ef" * 32}))
    assert (pin.pinned, pin.reason) == (False, "Unpinned")
    assert "pins only model.pkl, flags.pkl" in pin.message
    assert "bundle.json and model.onnx" in pin.message
    assert "spec.source.digest" in pin.message


def test_both_pins_count_as_pinned_by_the_digest():
    pin = pinning(_spec(digest=DIGEST, sha256={"model.pkl": "cd" * 32}))
    assert (pin.pinned, pin.reason) == (True, "BundleDigest")


def test_an_unpinned_model_is_served_unless_the_operator_requires_pins():
    pin = pinning(_spec())
    assert (pin.pinned, pin.reason) == (False, "Unpinned")
    assert "is not pinned" in pin.message
    assert refusal(pin, require_pinned=False) is None
    refused = refusal(pin, require_pinned=True)
    assert refused is not None
    assert refused.startswith("this operator serves only pinned bundles (requirePinnedBundles)")
    assert refusal(pinning(_spec(sha256={"model.pkl": "cd" * 32})), True) is not None


def _observed(pin, failure=None) -> status.Observed:
    return status.Observed(
        generation=3,
        desired_version="1.4.2",
        replicas=1,
        ready_replicas=0,
        complete=False,
        answering=0,
        serving_version=None,
        failure=failure,
        url="http://crime.models.svc/api",
        ingress_path=None,
        pinning=pin,
    )


def test_pinned_is_a_fourth_condition_beside_the_kstatus_three():
    now, later = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
    built = status.build_status(_observed(pinning(_spec())), [], now)
    conditions = {c["type"]: c for c in built["conditions"]}
    assert list(conditions) == ["Ready", "Reconciling", "Stalled", "Pinned"]
    assert conditions["Pinned"]["status"] == "False"
    assert conditions["Pinned"]["reason"] == "Unpinned"
    assert conditions["Pinned"]["observedGeneration"] == 3
    # Unpinned says nothing about progress: the rollout goes on.
    assert (conditions["Reconciling"]["status"], conditions["Stalled"]["status"]) == (
        "True",
        "False",
    )
    pinned = status.build_status(
        _observed(pinning(_spec(digest=DIGEST))), built["conditions"], later
    )
    condition = next(c for c in pinned["conditions"] if c["type"] == "Pinned")
    assert (condition["status"], condition["reason"]) == ("True", "BundleDigest")
    assert condition["lastTransitionTime"] == later
    assert status.status_differs(pinned, built)


def test_a_spec_that_cannot_be_read_gets_no_pinned_condition():
    built = status.build_status(_observed(None, status.Failure("InvalidSpec", "x")), [], "t")
    assert [c["type"] for c in built["conditions"]] == ["Ready", "Reconciling", "Stalled"]


CONFIG = OperatorConfig(server_image="registry.local/server:1")
T0 = "2026-01-01T00:00:00Z"


def _model(source, status=None):
    return {
        "apiVersion": "batcomputer.io/v1alpha1",
        "kind": "BatModel",
        "metadata": {"name": "crime", "namespace": "models", "uid": "uid-1", "generation": 2},
        "spec": {"version": "1.4.2", "source": {"uri": URI, **source}},
        "status": status or {},
    }


def _conditions(plan) -> dict[str, dict]:
    return {c["type"]: c for c in plan.status["conditions"]}


def test_the_status_says_pinned_or_not_beside_the_kstatus_conditions():
    pinned = _conditions(decide(_model({"digest": DIGEST}), Snapshot(), CONFIG, T0))
    assert list(pinned) == ["Ready", "Reconciling", "Stalled", "Pinned"]
    assert (pinned["Pinned"]["status"], pinned["Pinned"]["reason"]) == ("True", "BundleDigest")
    assert pinned["Pinned"]["observedGeneration"] == 2
    unpinned = _conditions(decide(_model({}), Snapshot(), CONFIG, T0))
    assert (unpinned["Pinned"]["status"], unpinned["Pinned"]["reason"]) == ("False", "Unpinned")
    # unpinned, but served: the operator was not told to refuse it
    assert unpinned["Reconciling"]["status"] == "True"
    assert unpinned["Stalled"]["status"] == "False"


def test_a_required_pin_missing_stalls_the_model_deploys_nothing_and_says_so_once():
    config = OperatorConfig(server_image="registry.local/server:1", require_pinned_bundles=True)
    plan = decide(_model({"sha256": {"model.pkl": "cd" * 32}}), Snapshot(), config, T0)
    assert plan.writes == ()
    conditions = _conditions(plan)
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == (
        "True",
        "Unpinned",
    )
    assert conditions["Stalled"]["message"].startswith(
        "this operator serves only pinned bundles (requirePinnedBundles): version 1.4.2 pins "
        "only model.pkl"
    )
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Pinned"]["status"] == "False"
    assert plan.stalled
    (event,) = plan.transitions
    assert (event.reason, event.warning) == ("Unpinned", True)
    again = decide(_model({}, status=plan.status), Snapshot(), config, T0)
    assert again.transitions == ()  # one Warning Event, not one per pass

    pinned = decide(_model({"digest": DIGEST}), Snapshot(), config, T0)
    assert "Deployment" in {write.kind for write in pinned.writes}
