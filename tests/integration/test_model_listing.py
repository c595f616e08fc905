"""batcomputer-models list against a real Azurite holding published and hostile bundles."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from batcomputer_bundle import bundle
from batcomputer_dev.pytest_azurite import run_console_script


def _models(azurite, *args: str) -> subprocess.CompletedProcess[str]:
    return run_console_script(
        "batcomputer-models", *args, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )


def _publish(azurite, folder: Path, to: str) -> None:
    result = run_console_script(
        "batcomputer-publish",
        str(folder),
        "--to",
        to,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert result.returncode == 0, result.stderr


def _put(azurite, container: str, name: str, content: bytes) -> None:
    client = azurite.service_client().get_container_client(container)
    client.upload_blob(name, content, overwrite=True)


@pytest.fixture(scope="module")
def published(azurite, trained_bundles, tmp_path_factory):
    """titanic 1.0.0 and 1.1.0 and crime 1.0.0 published under models/, plus hostile entries."""
    container = azurite.make_container("listing")
    to = azurite.folder_uri(container, "models")
    _publish(azurite, trained_bundles.titanic, to)
    _publish(azurite, trained_bundles.crime, to)
    minor = tmp_path_factory.mktemp("minor") / "1.1.0"
    shutil.copytree(trained_bundles.titanic, minor)
    bundle.write_manifest(minor, {**bundle.read_manifest(minor), "version": "1.1.0"})
    _publish(azurite, minor, to)

    hostile = {
        "broken/1.0.0/bundle.json": b"{not json",
        "binary/1.0.0/bundle.json": bytes(range(256)),
        "array/1.0.0/bundle.json": b"[1, 2, 3]",
        "typed/1.0.0/bundle.json": json.dumps(
            {"name": 7, "version": ["1.0.0"], "schema_digest": {}, "metrics": "great"}
        ).encode(),
        "moved/2.0.0/bundle.json": json.dumps(
            {"name": "elsewhere", "version": "2.0.0", "schema_digest": "sha256:ab", "metrics": {}}
        ).encode(),
        "deep/1.0.0/bundle.json": b"[" * 100_000 + b"]" * 100_000,
        "huge/1.0.0/bundle.json": b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        "notes/readme.txt": b"not a bundle",
        "titanic/1.0.0/extra/bundle.json": b"{}",  # too deep: not a version folder
    }
    for name, content in hostile.items():
        _put(azurite, container, f"models/{name}", content)
    return container, to


def test_listing_names_every_published_version_with_digests_metrics_and_time(
    azurite, trained_bundles, published
):
    container, to = published
    result = _models(azurite, "list", to, "--json")
    assert result.returncode == 0, result.stderr
    entries = {(e["model"], e["version"]): e for e in json.loads(result.stdout)}

    titanic = entries[("titanic", "1.0.0")]
    manifest_bytes = (trained_bundles.titanic / "bundle.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    assert titanic["bundle_digest"] == "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    assert titanic["schema_digest"] == manifest["schema_digest"]
    assert titanic["metrics"]["accuracy"] == manifest["metrics"]["accuracy"]
    assert titanic["created_at"] == manifest["created_at"]
    assert titanic["problem"] is None
    blob = azurite.service_client().get_blob_client(container, "models/titanic/1.0.0/bundle.json")
    published_at = blob.get_blob_properties().last_modified
    assert titanic["published_at"] == published_at.isoformat()

    assert entries[("titanic", "1.1.0")]["schema_digest"] == manifest["schema_digest"]
    assert entries[("titanic", "1.1.0")]["bundle_digest"] != titanic["bundle_digest"]
    assert entries[("crime", "1.0.0")]["problem"] is None
    # Ordered by model, then SemVer; nothing but model/version/bundle.json is listed.
    keys = [(e["model"], e["version"]) for e in json.loads(result.stdout)]
    assert keys.index(("titanic", "1.0.0")) < keys.index(("titanic", "1.1.0"))
    assert keys == sorted(keys, key=lambda key: key[0])
    assert not any(model == "notes" for model, _ in keys)
    assert ("titanic", "extra") not in entries


def test_hostile_manifests_are_reported_per_entry_without_stopping_the_listing(azurite, published):
    _, to = published
    result = _models(azurite, "list", to, "--json")
    assert result.returncode == 0, result.stderr
    problems = {e["model"]: e["problem"] for e in json.loads(result.stdout)}
    assert "not valid JSON" in problems["broken"]
    assert "not valid JSON" in problems["binary"]
    assert "not valid JSON" in problems["deep"] or "must hold a JSON object" in problems["deep"]
    assert problems["array"] == "bundle.json must hold a JSON object"
    assert problems["typed"] == "bundle.json has no name string"
    assert problems["moved"] == "bundle.json names name 'elsewhere' but sits in folder 'moved'"
    assert "more than the" in problems["huge"]
    assert "not read" in problems["huge"]
    typed = next(e for e in json.loads(result.stdout) if e["model"] == "typed")
    assert typed["schema_digest"] is None
    assert typed["metrics"] == {}


def test_table_shows_short_digests_and_problems_and_model_narrows_it(
    azurite, trained_bundles, published
):
    _, to = published
    table = _models(azurite, "list", to)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "PUBLISHED", "BUNDLE", "SCHEMA", "METRICS"]
    schema = bundle.read_manifest(trained_bundles.crime)["schema_digest"]
    crime_line = next(line for line in lines if line.startswith("crime "))
    assert schema[: len("sha256:") + 12] in crime_line
    assert "accuracy=" in crime_line
    broken_line = lines.index(next(line for line in lines if line.startswith("broken ")))
    assert lines[broken_line + 1].strip().startswith("! bundle.json is not valid JSON")

    narrowed = _models(azurite, "list", to, "--model", "titanic")
    assert narrowed.returncode == 0, narrowed.stderr
    models = {line.split()[0] for line in narrowed.stdout.splitlines()[1:]}
    versions = [line.split()[1] for line in narrowed.stdout.splitlines()[1:]]
    assert models == {"titanic"}
    assert versions == ["1.0.0", "1.1.0"]

    nothing = _models(azurite, "list", to, "--model", "absent")
    assert nothing.returncode == 0
    assert nothing.stdout == ""
    assert "no published versions for model 'absent'" in nothing.stderr


def test_a_missing_container_or_refused_credentials_is_one_clear_line(azurite, published):
    container, _ = published
    missing = _models(azurite, "list", azurite.folder_uri("no-such-container"))
    assert missing.returncode == 1
    assert "batcomputer-models:" in missing.stderr
    assert "Traceback" not in missing.stderr

    write_only = azurite.sas_token(container, permission="w")
    refused = run_console_script(
        "batcomputer-models", "list", f"{azurite.folder_uri(container)}?{write_only}"
    )
    assert refused.returncode == 1
    assert "authentication failed" in refused.stderr
    assert write_only.split("sig=")[1] not in refused.stderr

    bad_uri = _models(azurite, "list", "ftp://example/x")
    assert bad_uri.returncode == 2
    assert "Traceback" not in bad_uri.stderr
