"""The GitOps examples hang together: what Argo CD and Flux sync exists and is health-checked."""

import re
from pathlib import Path

import yaml

from batcomputer_bundle.names import DIGEST_PATTERN

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ARGOCD = EXAMPLES / "gitops" / "argocd"
HEALTH_KEY = "resource.customizations.health.batcomputer.io_BatModel"


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _synced_batmodels() -> list[dict]:
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _docs(EXAMPLES / name)]


def test_argocd_cm_patch_embeds_the_tested_lua_verbatim():
    (patch,) = _docs(ARGOCD / "argocd-cm-patch.yaml")
    assert patch["data"][HEALTH_KEY] == (ARGOCD / "batmodel-health.lua").read_text()


def test_argocd_applications_sync_paths_of_this_repository():
    applications = _docs(ARGOCD / "application.yaml")
    assert [app["kind"] for app in applications] == ["Application", "Application"]
    paths = {app["metadata"]["name"]: app["spec"]["source"]["path"] for app in applications}
    assert (REPO / paths["batcomputer-operator"] / "Chart.yaml").is_file()
    assert (REPO / paths["batcomputer-models"] / "kustomization.yaml").is_file()
    operator = applications[0]["spec"]
    models_namespace = applications[1]["spec"]["destination"]["namespace"]
    assert operator["source"]["helm"]["valuesObject"]["watchNamespaces"] == [models_namespace]


def test_synced_manifests_are_the_example_batmodels():
    batmodels = _synced_batmodels()
    assert sorted(doc["metadata"]["name"] for doc in batmodels) == ["crime", "titanic"]
    for doc in batmodels:
        assert doc["kind"] == "BatModel"
        assert doc["apiVersion"] == "batcomputer.io/v1alpha1"
        assert re.fullmatch(DIGEST_PATTERN, doc["spec"]["source"]["digest"])
        assert "sha256" not in doc["spec"]["source"]
        assert doc["spec"]["source"]["uri"].endswith(f"/{doc['metadata']['name']}/1.0.0")


def test_flux_health_checks_cover_every_synced_batmodel():
    source, kustomization = _docs(EXAMPLES / "gitops" / "flux" / "kustomization.yaml")
    assert kustomization["spec"]["sourceRef"] == {"kind": source["kind"], "name": "batcomputer"}
    assert (REPO / kustomization["spec"]["path"] / "kustomization.yaml").is_file()
    checked = {
        (check["kind"], check["name"], check["namespace"])
        for check in kustomization["spec"]["healthChecks"]
    }
    namespace = kustomization["spec"]["targetNamespace"]
    assert checked == {
        ("BatModel", doc["metadata"]["name"], namespace) for doc in _synced_batmodels()
    }


def test_credentials_secret_uses_only_keys_the_fetcher_reads():
    (secret,) = _docs(EXAMPLES / "blob-credentials-secret.yaml")
    assert secret["kind"] == "Secret"
    assert set(secret["stringData"]) <= {"connectionString", "sasToken"}
    names = {doc["spec"]["source"]["credentialsSecret"] for doc in _synced_batmodels()}
    assert names == {secret["metadata"]["name"]}
