"""The example manifests are accepted by the real API server (CRD schema, admission)."""

import json
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("model", ["titanic", "crime"])
def test_example_batmodel_passes_admission(kube_cluster, operator_release, model):
    answer = kube_cluster.kubectl(
        *("apply", "--dry-run=server", "-o", "json"),
        *("-n", operator_release.models_namespace, "-f", str(EXAMPLES / f"batmodel-{model}.yaml")),
    )
    accepted = json.loads(answer)
    assert accepted["metadata"]["name"] == model
    assert accepted["spec"]["version"] == "1.0.0"


def test_example_secret_passes_admission(kube_cluster, operator_release):
    secret = yaml.safe_load((EXAMPLES / "blob-credentials-secret.yaml").read_text())
    secret["metadata"]["namespace"] = operator_release.models_namespace
    accepted = json.loads(
        kube_cluster.kubectl(
            "apply", "--dry-run=server", "-o", "json", "-f", "-", input_text=json.dumps(secret)
        )
    )
    assert set(accepted["data"]) == {"connectionString"}


def test_gitops_kustomization_renders_both_models_into_their_namespace(kube_cluster):
    rendered = list(yaml.safe_load_all(kube_cluster.kubectl("kustomize", str(EXAMPLES))))
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in rendered) == [
        ("BatModel", "crime"),
        ("BatModel", "titanic"),
    ]
    assert {doc["metadata"]["namespace"] for doc in rendered} == {"models"}
