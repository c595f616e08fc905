"""examples/pipeline/train-publish-bump.sh, run for real: train, publish to Azurite, bump."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "pipeline" / "train-publish-bump.sh"
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent


def _run_pipeline(azurite, container: str, manifest: Path, version: str):
    env = dict(
        os.environ,
        BATCOMPUTER_CONTAINER_URI=azurite.folder_uri(container),
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        BATCOMPUTER_BIN=str(BIN),
        PYTHON=sys.executable,
    )
    return subprocess.run(
        [str(SCRIPT), "titanic", version, str(manifest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_release_bumps_the_manifest_to_the_published_bundle(azurite, tmp_path):
    container = azurite.make_container("pipeline")
    manifest = tmp_path / "batmodel-titanic.yaml"
    manifest.write_text((EXAMPLES / "batmodel-titanic.yaml").read_text())

    result = _run_pipeline(azurite, container, manifest, "1.0.1")
    assert result.returncode == 0, result.stderr

    spec = yaml.safe_load(manifest.read_text())["spec"]
    assert spec["version"] == "1.0.1"
    assert spec["source"]["uri"] == azurite.folder_uri(container, "titanic/1.0.1")
    blobs = azurite.service_client().get_container_client(container)
    bundle = json.loads(blobs.download_blob("titanic/1.0.1/bundle.json").readall())
    assert bundle["version"] == "1.0.1"
    published = blobs.download_blob("titanic/1.0.1/bundle.json").readall()
    assert spec["source"]["digest"] == "sha256:" + hashlib.sha256(published).hexdigest()
    for name, entry in bundle["files"].items():
        data = blobs.download_blob(f"titanic/1.0.1/{name}").readall()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert spec["replicas"] == 2
    assert spec["source"]["credentialsSecret"] == "blob-reader"

    # Published versions are immutable: a second release of 1.0.1 fails and leaves Git alone.
    bumped = manifest.read_text()
    again = _run_pipeline(azurite, container, manifest, "1.0.1")
    assert again.returncode != 0
    assert "1.0.1" in again.stderr
    assert manifest.read_text() == bumped
