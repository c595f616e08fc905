"""The cluster pytest plugin's decisions: what an existing cluster needs, when to tear down."""

import pytest

from batcomputer_dev.cluster_teardown import FORCE_TEARDOWN, teardown_wanted
from batcomputer_dev.pytest_cluster import existing_cluster_problems

EVERYTHING = {
    "KUBECONFIG": "/home/me/.kube/config",
    "BATCOMPUTER_SERVER_IMAGE": "registry.example/batcomputer-server:0.1.0",
    "BATCOMPUTER_OPERATOR_IMAGE": "registry.example/batcomputer-operator:0.1.0",
    "BATCOMPUTER_HOST_IP": "192.168.49.1",
}
ALL_FIXTURES = {"kube_cluster", "server_image", "operator_image", "pod_azurite"}


def test_an_existing_cluster_with_every_variable_set_needs_nothing_more():
    assert existing_cluster_problems(EVERYTHING, ALL_FIXTURES, "/usr/bin/kubectl") == []


@pytest.mark.parametrize("missing", sorted(EVERYTHING))
def test_each_missing_variable_is_named_with_what_it_is_for(missing):
    environ = {name: value for name, value in EVERYTHING.items() if name != missing}
    (problem,) = existing_cluster_problems(environ, ALL_FIXTURES, "/usr/bin/kubectl")
    assert problem.startswith(f"{missing}: ")


def test_only_what_the_selected_tests_use_is_required():
    assert existing_cluster_problems({}, {"trained_bundles", "azurite"}, None) == []
    assert existing_cluster_problems({"KUBECONFIG": "k"}, {"kube_cluster"}, None) == [
        "kubectl on PATH"
    ]
    (problem,) = existing_cluster_problems({}, {"pod_azurite"}, "/usr/bin/kubectl")
    assert problem.startswith("BATCOMPUTER_HOST_IP: ")


@pytest.mark.parametrize(
    ("kind", "started_here", "environ", "wanted"),
    [
        ("local", True, {}, True),
        ("local", False, {}, False),
        ("local", False, {FORCE_TEARDOWN: "1"}, True),
        ("local", False, {FORCE_TEARDOWN: "0"}, False),
        ("local", False, {FORCE_TEARDOWN: "yes"}, False),
        ("existing", False, {FORCE_TEARDOWN: "1"}, False),
        ("existing", True, {}, False),
        ("kind", True, {FORCE_TEARDOWN: "1"}, False),
    ],
)
def test_only_a_local_cluster_this_session_started_or_forced_is_torn_down(
    kind, started_here, environ, wanted
):
    assert teardown_wanted(kind, started_here, environ) is wanted
