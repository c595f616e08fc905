"""The chart's NetworkPolicies and image pinning, rendered by the real helm binary."""

import json

import pytest
import yaml

from batcomputer_dev.security_scan import CHART
from batcomputer_operator.config import load_config
from batcomputer_operator.manifests import SERVER_PORT, Owner, deployment
from batcomputer_operator.spec import parse_spec

DIGEST = "sha256:" + "0123456789abcdef" * 4
RELEASE_NAMESPACE = "batcomputer-system"


def _render(helm, *args: str) -> list[dict]:
    result = helm("template", "batcomputer", CHART, "--namespace", RELEASE_NAMESPACE, *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _policies(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc["spec"]
        for doc in docs
        if doc["kind"] == "NetworkPolicy"
    }


def _model_pod_labels() -> dict[str, str]:
    spec = parse_spec(
        {"version": "1.0.0", "source": {"uri": "https://a.blob.core.windows.net/m/t"}}
    )
    owner = Owner(name="titanic", namespace="models", uid="u")
    return deployment(owner, spec, load_config([], {}))["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}
    return selector["matchLabels"].items() <= labels.items()


@pytest.fixture(scope="module")
def namespaced(helm) -> list[dict]:
    return _render(helm, "--set-json", 'watchNamespaces=["models","staging"]')


def test_policies_are_on_by_default_for_every_watched_namespace(namespaced):
    assert set(_policies(namespaced)) == {
        (RELEASE_NAMESPACE, "batcomputer-batcomputer-operator"),
        ("models", "batcomputer-models"),
        ("staging", "batcomputer-models"),
    }


def test_model_pods_are_reached_only_on_the_serving_port_from_their_namespace(namespaced):
    policy = _policies(namespaced)[("models", "batcomputer-models")]
    assert _selects(policy["podSelector"], _model_pod_labels())
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    port = [{"port": SERVER_PORT, "protocol": "TCP"}]
    assert policy["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": port},
        _SHADOW_COPIES_IN,
        _ANALYSIS,
    ]


def test_model_pods_reach_only_dns_blob_storage_and_their_namespaces_model_pods(namespaced):
    policy = _policies(namespaced)[("models", "batcomputer-models")]
    dns, blob, shadow_copies = policy["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert blob == {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }
    (peer,) = shadow_copies["to"]
    assert set(peer) == {"podSelector"}  # the policy's own namespace, no other
    assert _selects(peer["podSelector"], _model_pod_labels())
    assert shadow_copies["ports"] == [{"port": SERVER_PORT, "protocol": "TCP"}]


def test_shadow_copies_between_model_pods_can_be_turned_off(helm):
    docs = _render(
        helm,
        *("--set-json", 'watchNamespaces=["models"]'),
        *("--set", "networkPolicy.shadowCopies=false"),
    )
    policy = _policies(docs)[("models", "batcomputer-models")]
    assert len(policy["egress"]) == 2
    assert _SHADOW_COPIES_IN not in policy["ingress"]


def test_the_operator_reaches_only_the_api_server_and_is_reached_only_on_its_ports(namespaced):
    policy = _policies(namespaced)[(RELEASE_NAMESPACE, "batcomputer-batcomputer-operator")]
    (operator,) = [doc for doc in namespaced if doc["kind"] == "Deployment"]
    assert _selects(policy["podSelector"], operator["spec"]["template"]["metadata"]["labels"])
    api_server, model_metrics = policy["egress"]
    assert api_server == {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
    }
    (peer,) = model_metrics["to"]
    assert peer["namespaceSelector"] == {}
    assert _selects(peer["podSelector"], _model_pod_labels())
    assert model_metrics["ports"] == [{"port": SERVER_PORT, "protocol": "TCP"}]
    assert policy["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]


# Model pods let the operator's pods in their own namespace read /metrics (Canary analysis).
_ANALYSIS = {
    "from": [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}
            },
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "batcomputer-operator",
                    "app.kubernetes.io/instance": "batcomputer",
                }
            },
        }
    ],
    "ports": [{"port": SERVER_PORT, "protocol": "TCP"}],
}


# Model pods let the model pods of their own namespace in: a Shadow rollout's copies.
_SHADOW_COPIES_IN = {
    "from": [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "batcomputer-model",
                    "app.kubernetes.io/managed-by": "batcomputer-operator",
                }
            }
        }
    ],
    "ports": [{"port": SERVER_PORT, "protocol": "TCP"}],
}


def test_the_shadow_copy_peer_is_exactly_the_model_pods(namespaced):
    assert _selects(_SHADOW_COPIES_IN["from"][0]["podSelector"], _model_pod_labels())


def test_the_analysis_peer_is_exactly_the_operators_pods(namespaced):
    (operator,) = [doc for doc in namespaced if doc["kind"] == "Deployment"]
    labels = operator["spec"]["template"]["metadata"]["labels"]
    assert _selects(_ANALYSIS["from"][0]["podSelector"], labels)


def test_rollout_analysis_can_be_turned_off(helm):
    docs = _render(
        helm,
        *("--set-json", 'watchNamespaces=["models"]'),
        *("--set", "networkPolicy.rolloutAnalysis=false"),
    )
    policies = _policies(docs)
    assert len(policies[(RELEASE_NAMESPACE, "batcomputer-batcomputer-operator")]["egress"]) == 1
    assert _ANALYSIS not in policies[("models", "batcomputer-models")]["ingress"]


def test_peers_endpoints_and_namespaces_come_from_values(helm):
    monitoring = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    ingress_controller = {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}
    docs = _render(
        helm,
        *("--set-json", 'networkPolicy.modelNamespaces=["ml"]'),
        *("--set-json", f"networkPolicy.servingFrom=[{json.dumps(ingress_controller)}]"),
        *("--set-json", f"networkPolicy.metricsFrom=[{json.dumps(monitoring)}]"),
        *("--set-json", 'networkPolicy.blobStorage={"cidrs":["10.244.0.1/32"],"ports":[10000]}'),
        *("--set-json", 'networkPolicy.apiServer={"cidrs":["10.0.0.5/32"],"ports":[6443]}'),
    )
    policies = _policies(docs)
    model = policies[("ml", "batcomputer-models")]
    assert [rule["from"] for rule in model["ingress"]] == [
        [ingress_controller],
        [monitoring],
        _SHADOW_COPIES_IN["from"],
        _ANALYSIS["from"],
    ]
    assert model["egress"][1] == {
        "to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}],
        "ports": [{"port": 10000, "protocol": "TCP"}],
    }
    operator = policies[(RELEASE_NAMESPACE, "batcomputer-batcomputer-operator")]
    assert operator["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.5/32"}}]


def test_an_empty_peer_list_lets_nobody_in_rather_than_everybody(helm):
    docs = _render(
        helm,
        *("--set-json", 'watchNamespaces=["models"]', "--set-json", "networkPolicy.servingFrom=[]"),
    )
    # Only the model pods' Shadow copies and the operator, to read /metrics for analysis.
    ingress = _policies(docs)[("models", "batcomputer-models")]["ingress"]
    assert ingress == [_SHADOW_COPIES_IN, _ANALYSIS]


def test_policies_can_be_turned_off(helm):
    docs = _render(helm, "--set-json", 'watchNamespaces=["models"]')
    assert _policies(docs)
    assert not _policies(_render(helm, "--set", "networkPolicy.enabled=false"))


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (("--set-json", 'networkPolicy.blobStorage={"cidrs":["10.0.0.1"],"ports":[443]}'), "cidrs"),
        (("--set-json", 'networkPolicy.blobStorage={"cidrs":[],"ports":[443]}'), "cidrs"),
        (("--set-json", 'networkPolicy.apiServer={"cidrs":["0.0.0.0/0"],"ports":[0]}'), "ports"),
        (("--set-json", 'networkPolicy.servingFrom=[{"namespace":"x"}]'), "servingFrom"),
        (("--set-json", "networkPolicy.metricsFrom=[{}]"), "metricsFrom"),
        (("--set", "networkPolicy.modelNamespaces[0]=Bad_Name"), "modelNamespaces"),
    ],
)
def test_bad_network_values_are_refused_naming_the_field(helm, values, named):
    result = helm("template", "batcomputer", CHART, *values, check=False)
    assert result.returncode != 0
    assert named in result.stderr


def _operator_image(docs: list[dict]) -> str:
    (operator,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    return operator["spec"]["template"]["spec"]["containers"][0]["image"]


def test_images_can_be_pinned_by_digest(helm):
    server = f"registry.example/batcomputer-server@{DIGEST}"
    docs = _render(helm, "--set", f"image.digest={DIGEST}", "--set", f"serverImage={server}")
    assert _operator_image(docs) == f"ghcr.io/batcomputer/batcomputer-operator@{DIGEST}"
    (operator,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    config = load_config([], {k: v for k, v in env.items() if v is not None})
    assert config.server_image == server
    assert _operator_image(_render(helm)) == "ghcr.io/batcomputer/batcomputer-operator:0.1.0"


@pytest.mark.parametrize(
    "values",
    [
        ("--set", "image.digest=sha256:abc"),
        ("--set", "image.digest=md5:" + "0" * 64),
        ("--set", f"image.digest={DIGEST.upper()}"),
        ("--set", "serverImage=registry.example/server@sha256:abc"),
        ("--set", "serverImage=Registry.example/Server:1"),
        ("--set", "serverImage=server:1 --privileged"),
    ],
)
def test_malformed_digests_and_references_are_refused(helm, values):
    result = helm("template", "batcomputer", CHART, *values, check=False)
    assert result.returncode != 0
    field = values[1].split("=")[0]
    assert f"'/{field.replace('.', '/')}'" in result.stderr
