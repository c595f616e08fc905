"""batcomputer-publish with real trained bundles into a real Azurite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from batcomputer_bundle import bundle
from batcomputer_dev.pytest_azurite import run_console_script
from batcomputer_dev.pytest_bundles import train_bundle

CONFIGS = Path(__file__).parents[2] / "training" / "batcomputer_training" / "configs"


def _publish(azurite, folder: Path, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_console_script(
        "batcomputer-publish",
        str(folder),
        "--to",
        to,
        *extra,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )


def _blob_names(azurite, container: str, prefix: str) -> list[str]:
    client = azurite.service_client().get_container_client(container)
    return sorted(blob.name for blob in client.list_blobs(name_starts_with=prefix))


def _as_version(folder: Path, version: str, tmp_path: Path) -> Path:
    """The same trained bundle released under another version number."""
    copy = tmp_path / version
    shutil.copytree(folder, copy)
    manifest = bundle.read_manifest(copy)
    bundle.write_manifest(copy, {**manifest, "version": version})
    return copy


def test_publish_uploads_under_model_and_version_and_prints_a_fetchable_batmodel(
    azurite, trained_bundles, tmp_path
):
    to = azurite.folder_uri("published", "models")  # the container does not exist yet
    result = _publish(azurite, trained_bundles.titanic, to, "--namespace", "ml")
    assert result.returncode == 0, result.stderr
    assert "100%" in result.stderr  # the progress bar, on stderr

    names = _blob_names(azurite, "published", "models/")
    files = sorted(p.name for p in trained_bundles.titanic.iterdir())
    assert names == [f"models/titanic/1.0.0/{name}" for name in files]

    batmodel = yaml.safe_load(result.stdout)
    manifest = bundle.read_manifest(trained_bundles.titanic)
    assert batmodel["apiVersion"] == "batcomputer.io/v1alpha1"
    assert batmodel["kind"] == "BatModel"
    assert batmodel["metadata"] == {"name": "titanic", "namespace": "ml"}
    assert batmodel["spec"]["version"] == "1.0.0"
    source = batmodel["spec"]["source"]
    assert source["uri"] == f"{to}/titanic/1.0.0"
    digest = bundle.bundle_digest((trained_bundles.titanic / "bundle.json").read_bytes())
    assert source["digest"] == digest
    assert "sha256" not in source  # the bundle digest covers every file
    assert f"bundle digest {digest}" in result.stderr

    # What the init container will do with exactly this manifest.
    pins = ["--digest", source["digest"]]
    dest = tmp_path / "fetched"
    fetched = run_console_script(
        "batcomputer-fetch",
        "--source",
        source["uri"],
        "--dest",
        str(dest),
        *pins,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert bundle.verify_folder(dest)["schema_digest"] == manifest["schema_digest"]


def test_manifest_uri_names_the_folder_as_the_cluster_reaches_it(azurite, trained_bundles):
    container = azurite.make_container("cluster-view")
    cluster_view = f"http://10.244.0.1:10000/devstoreaccount1/{container}"
    result = _publish(
        azurite,
        trained_bundles.crime,
        azurite.folder_uri(container),
        "--manifest-uri",
        cluster_view,
    )
    assert result.returncode == 0, result.stderr
    batmodel = yaml.safe_load(result.stdout)
    assert batmodel["metadata"] == {"name": "crime"}
    assert batmodel["spec"]["source"]["uri"] == f"{cluster_view}/crime/1.0.0"


def test_manifest_is_uploaded_after_every_file_it_lists(azurite, trained_bundles):
    container = azurite.make_container("order")
    assert _publish(azurite, trained_bundles.titanic, azurite.folder_uri(container)).returncode == 0
    client = azurite.service_client().get_container_client(container)
    created = {blob.name.rsplit("/", 1)[1]: blob.creation_time for blob in client.list_blobs()}
    manifest_time = created.pop("bundle.json")
    assert all(when <= manifest_time for when in created.values())


def test_published_versions_are_immutable_unless_forced(azurite, trained_bundles):
    container = azurite.make_container("immutable")
    to = azurite.folder_uri(container)
    assert _publish(azurite, trained_bundles.titanic, to).returncode == 0
    manifest_blob = azurite.service_client().get_blob_client(container, "titanic/1.0.0/bundle.json")
    first_etag = manifest_blob.get_blob_properties().etag

    again = _publish(azurite, trained_bundles.titanic, to)
    assert again.returncode == 1
    assert "titanic 1.0.0 is already published" in again.stderr
    assert "--force" in again.stderr
    assert again.stdout == ""
    assert manifest_blob.get_blob_properties().etag == first_etag

    forced = _publish(azurite, trained_bundles.titanic, to, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced" in forced.stderr
    assert manifest_blob.get_blob_properties().etag != first_etag


@pytest.fixture(scope="module")
def titanic_without_embarked(trained_bundles, tmp_path_factory) -> Path:
    """Titanic retrained without the port of embarkation: the scoring API changes."""
    config = (CONFIGS / "titanic.toml").read_text()
    feature = '[[features]]\nname = "embarked"\ntype = "categorical"\n'
    assert feature in config
    folder = tmp_path_factory.mktemp("no-embarked")
    (folder / "titanic.toml").write_text(config.replace(feature, ""))
    return train_bundle(str(folder / "titanic.toml"), "1.2.0", folder / "out")


def test_minor_bump_with_another_api_is_refused_and_major_bump_accepted(
    azurite, trained_bundles, titanic_without_embarked, tmp_path
):
    container = azurite.make_container("semver")
    to = azurite.folder_uri(container)
    assert _publish(azurite, trained_bundles.titanic, to).returncode == 0
    # Same API, new version number: a MINOR release is fine.
    same_api = _as_version(trained_bundles.titanic, "1.1.0", tmp_path)
    assert _publish(azurite, same_api, to).returncode == 0

    refused = _publish(azurite, titanic_without_embarked, to)
    assert refused.returncode == 1
    assert "titanic 1.2.0 changes the scoring API" in refused.stderr
    assert "published 1.1.0" in refused.stderr
    assert "publish it as 2.0.0" in refused.stderr
    assert _blob_names(azurite, container, "titanic/1.2.0/") == []

    major = _as_version(titanic_without_embarked, "2.0.0", tmp_path)
    accepted = _publish(azurite, major, to)
    assert accepted.returncode == 0, accepted.stderr
    assert yaml.safe_load(accepted.stdout)["spec"]["version"] == "2.0.0"


def test_a_bundle_that_fails_verification_is_not_uploaded(azurite, trained_bundles, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(trained_bundles.titanic, folder)
    (folder / "flags.pkl").write_bytes(b"not the flags")
    container = azurite.make_container("tampered")
    result = _publish(azurite, folder, azurite.folder_uri(container))
    assert result.returncode == 2
    assert "sha256 mismatch for flags.pkl" in result.stderr
    assert _blob_names(azurite, container, "") == []


def test_container_sas_publishes_only_with_write_permission(azurite, trained_bundles):
    container = azurite.make_container("sas")
    read_only, writable = (azurite.sas_token(container, permission=p) for p in ("rl", "racwl"))
    bundle_folder = str(trained_bundles.titanic)
    to = azurite.folder_uri(container)
    refused = run_console_script("batcomputer-publish", bundle_folder, "--to", f"{to}?{read_only}")
    assert refused.returncode == 1
    assert "authentication failed: AuthorizationPermissionMismatch" in refused.stderr
    assert read_only.split("sig=")[1] not in refused.stderr

    published = run_console_script("batcomputer-publish", bundle_folder, "--to", f"{to}?{writable}")
    assert published.returncode == 0, published.stderr
    # The printed manifest never carries the SAS: credentials belong in a Secret.
    assert yaml.safe_load(published.stdout)["spec"]["source"]["uri"] == f"{to}/titanic/1.0.0"
