"""Model pods and the operator meet the Pod Security Standards' restricted profile and
today's Kubernetes schemas (the local 1.20 cluster has no PodSecurity admission)."""

import copy

import kubernetes_validate
import pytest
import yaml

from batcomputer_dev.pod_security import pod_spec_of, restricted_violations
from batcomputer_dev.security_scan import (
    CHART,
    EXAMPLES,
    HARDENED_VALUES,
    example_batmodels,
    operator_manifests,
)
from batcomputer_operator.config import OperatorConfig
from batcomputer_operator.manifests import Owner, deployment
from batcomputer_operator.spec import parse_spec

OWNER = Owner(name="crime", namespace="models", uid="0b9c7a8e-1111-2222-3333-444455556666")
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/1.4.2"
# Kubernetes releases whose schemas the manifests must satisfy, strictly (no unknown field).
SCHEMA_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def _model_variants() -> list[dict]:
    everything = {
        "version": "1.4.2",
        "source": {"uri": URI, "credentialsSecret": "blob-reader"},
        "fetch": {"resources": {"limits": {"memory": "1Gi"}}},
        "resources": {"requests": {"cpu": "1"}},
        "ingress": {"path": "/models/crime", "host": "models.example.org"},
        "serverImage": "registry.example/server@sha256:" + "ab" * 32,
    }
    built = [deployment(OWNER, parse_spec(everything), OperatorConfig())]
    for model in example_batmodels():
        built.extend(operator_manifests(model, OperatorConfig()))
    return built


@pytest.fixture(scope="module")
def chart_documents(helm) -> list[dict]:
    documents = []
    for values in ((), HARDENED_VALUES):
        rendered = helm("template", "batcomputer", CHART, "-n", "batcomputer-system", *values)
        documents.extend(doc for doc in yaml.safe_load_all(rendered.stdout) if doc)
    return documents


def test_the_example_models_are_built():
    names = {doc["metadata"]["name"] for doc in _model_variants() if doc["kind"] == "Deployment"}
    assert {"titanic-v1-0-0", "crime-v1-0-0", "crime-v1-4-2"} <= names


@pytest.mark.parametrize("manifest", _model_variants(), ids=lambda m: m["metadata"]["name"])
def test_model_pods_meet_the_restricted_profile(manifest):
    pod = pod_spec_of(manifest)
    if pod is not None:
        assert restricted_violations(pod) == []


def test_the_operator_pod_meets_the_restricted_profile(chart_documents):
    pods = [pod_spec_of(doc) for doc in chart_documents if doc["kind"] == "Deployment"]
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == []


def _pod():
    return copy.deepcopy(pod_spec_of(_model_variants()[0]))


def _broken(change) -> list[str]:
    pod = _pod()
    change(pod)
    return restricted_violations(pod)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser"),
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (
            lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (lambda p: p["initContainers"][0]["securityContext"].pop("capabilities"), "ALL"),
        (
            lambda p: p["containers"][0]["securityContext"]["capabilities"].update(
                add=["SYS_ADMIN"]
            ),
            "NET_BIND_SERVICE",
        ),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p["containers"][0]["ports"][0].update(hostPort=80), "hostPort"),
        (
            lambda p: p["securityContext"].update(
                sysctls=[{"name": "kernel.msgmax", "value": "1"}]
            ),
            "kernel.msgmax",
        ),
    ],
)
def test_the_profile_check_catches_each_rule(change, named):
    # Container contexts set seccomp and runAsNonRoot too; drop them so the pod level counts.
    def without_container_fallbacks(pod):
        for container in pod["initContainers"] + pod["containers"]:
            container["securityContext"].pop("seccompProfile", None)
            container["securityContext"].pop("runAsNonRoot", None)
        change(pod)

    violations = _broken(without_container_fallbacks)
    assert any(named in violation for violation in violations), violations


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_fits_current_kubernetes_schemas(version, chart_documents):
    for manifest in [*_model_variants(), *chart_documents]:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_schema_validation_catches_a_misspelt_field():
    manifest = copy.deepcopy(_model_variants()[0])
    manifest["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, SCHEMA_VERSIONS[0], strict=True)


def test_the_example_namespace_enforces_the_restricted_profile():
    namespace = yaml.safe_load((EXAMPLES / "namespace-models.yaml").read_text())
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # the BatModels land in it (kustomization.yaml sets the namespace)
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == namespace["metadata"]["name"] == "models"
