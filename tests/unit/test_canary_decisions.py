"""The children of a Canary step: both versions' Deployments at their share, the serving
one rescaled whole from what the cluster shows, and the stable Service over both."""

import copy

import pytest

from batcomputer_operator import diff, manifests
from batcomputer_operator.canary import rescaled, step_children, widened_service
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.naming import MODEL_LABEL, SERVING_ANNOTATION, VERSION_LABEL
from batcomputer_operator.spec import parse_spec

CONFIG = OperatorConfig(server_image="registry.local/server:1")
OWNER = manifests.Owner("crime", "models", "uid-crime")
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/"


def _spec(version, replicas=4):
    return parse_spec({"version": version, "replicas": replicas, "source": {"uri": URI + version}})


def _live(version, replicas=4):
    """The Deployment as the API server returns it: defaults, controller fields, status."""
    live = copy.deepcopy(manifests.deployment(OWNER, _spec(version, replicas), CONFIG))
    live["metadata"].update(
        uid="uid-deployment",
        resourceVersion="4711",
        generation=3,
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "batcomputer-operator", "operation": "Apply"}],
    )
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/x"
    live["status"] = {"replicas": replicas, "readyReplicas": replicas}
    return live


def test_rescaled_changes_the_replica_count_and_nothing_else():
    live = _live("1.0.0")
    manifest = rescaled(live, 3)
    assert manifest["spec"] == {**live["spec"], "replicas": 3}
    assert manifest["spec"]["template"] == live["spec"]["template"]
    assert not diff.differs({**manifest, "spec": {**manifest["spec"], "replicas": 4}}, live)
    assert diff.differs(manifest, live)
    assert not diff.differs(rescaled(live, 4), live)


def test_rescaled_applies_no_field_the_api_server_or_another_controller_owns():
    manifest = rescaled(_live("1.0.0"), 3)
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(manifest["metadata"]) == {
        "name",
        "namespace",
        "labels",
        "annotations",
        "ownerReferences",
    }
    assert "deployment.kubernetes.io/revision" not in manifest["metadata"]["annotations"]
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert manifest["metadata"]["annotations"]["batcomputer.io/version"] == "1.0.0"


def test_rescaled_leaves_the_live_object_alone():
    live = _live("1.0.0")
    before = copy.deepcopy(live)
    rescaled(live, 1)
    assert live == before


def test_the_widened_service_selects_every_version_and_names_the_serving_one():
    service = widened_service(OWNER, "1.0.0")
    assert service["spec"]["selector"] == {MODEL_LABEL: "crime"}
    assert service["metadata"]["annotations"][SERVING_ANNOTATION] == "1.0.0"
    assert service["spec"]["ports"] == manifests.service(OWNER, "1.0.0")["spec"]["ports"]


@pytest.mark.parametrize(
    ("weight", "replicas", "candidate", "serving"),
    [(10, 4, 1, 3), (50, 4, 2, 2), (10, 10, 1, 9), (90, 2, 1, 1), (50, 0, 0, 0)],
)
def test_a_step_shares_spec_replicas_between_the_versions(weight, replicas, candidate, serving):
    children = step_children(
        OWNER, _spec("2.0.0", replicas), CONFIG, _live("1.0.0", replicas), weight, widen=True
    )
    assert children.candidate["spec"]["replicas"] == candidate
    assert children.serving["spec"]["replicas"] == serving
    assert (children.split.canary, children.split.stable) == (candidate, serving)


def test_the_candidate_is_the_specs_version_built_whole():
    spec = _spec("2.0.0")
    children = step_children(OWNER, spec, CONFIG, _live("1.0.0"), 10, widen=False)
    built = manifests.deployment(OWNER, spec, CONFIG)
    assert children.candidate == {**built, "spec": {**built["spec"], "replicas": 1}}
    assert children.serving["metadata"]["name"] == "crime-v1-0-0"


def test_the_service_stays_on_the_serving_version_until_widened():
    narrow = step_children(OWNER, _spec("2.0.0"), CONFIG, _live("1.0.0"), 10, widen=False)
    assert narrow.service == manifests.service(OWNER, "1.0.0")
    assert narrow.service["spec"]["selector"][VERSION_LABEL] == "1.0.0"
    assert not narrow.widened
    wide = step_children(OWNER, _spec("2.0.0"), CONFIG, _live("1.0.0"), 10, widen=True)
    assert wide.service == widened_service(OWNER, "1.0.0")
    assert wide.widened
