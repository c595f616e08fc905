"""batcomputer-fetch --credentials-dir: credentials as a mounted Secret's files, never logged."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from batcomputer_bundle import bundle
from batcomputer_dev.pytest_azurite import credentials_environment

FETCH = str(Path(sys.executable).parent / "batcomputer-fetch")
PREFIX = "titanic/1.0.0"
# A well-formed account key for the emulator's account that is not its key.
WRONG_KEY = base64.b64encode(b"not-the-devstoreaccount1-key-" * 2).decode()


@pytest.fixture(scope="module")
def source(azurite, trained_bundles) -> str:
    container = azurite.make_container("credfiles")
    azurite.upload_folder(Path(trained_bundles["titanic"]), container, PREFIX)
    return azurite.folder_uri(container, PREFIX)


def _fetch(source: str, tmp_path: Path, files: dict[str, str], **environ: str):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in files.items():
        (credentials / name).write_text(value)
    log = tmp_path / "termination-log"
    result = subprocess.run(
        [
            *(FETCH, "--source", source, "--dest", str(tmp_path / "bundle")),
            *("--credentials-dir", str(credentials), "--termination-log", str(log)),
        ],
        env=credentials_environment(**environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, log.read_text() if log.exists() else ""


def test_a_connection_string_file_fetches_the_bundle(azurite, source, tmp_path):
    result, _ = _fetch(source, tmp_path, {"connectionString": azurite.connection_string})
    assert result.returncode == 0, result.stderr
    assert bundle.verify_folder(tmp_path / "bundle")["name"] == "titanic"


def test_a_sas_token_file_fetches_the_bundle(azurite, source, tmp_path):
    container = source.split("/")[4]
    result, _ = _fetch(source, tmp_path, {"sasToken": azurite.sas_token(container)})
    assert result.returncode == 0, result.stderr


def test_the_files_are_used_instead_of_the_environment(azurite, source, tmp_path):
    wrong = azurite.connection_string.replace(
        azurite.connection_string.split("AccountKey=")[1].split(";")[0], WRONG_KEY
    )
    files = {"connectionString": azurite.connection_string}
    result, _ = _fetch(source, tmp_path, files, AZURE_STORAGE_CONNECTION_STRING=wrong)
    assert result.returncode == 0, result.stderr


def test_a_failing_fetch_never_prints_the_credentials(azurite, source, tmp_path):
    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    wrong = azurite.connection_string.replace(key, WRONG_KEY)
    result, log = _fetch(source, tmp_path, {"connectionString": wrong})
    assert result.returncode == 4, result.stderr
    for output in (result.stdout, result.stderr, log):
        assert WRONG_KEY not in output
        assert WRONG_KEY[:16] not in output


def test_a_tampered_sas_file_fails_without_echoing_the_signature(azurite, source, tmp_path):
    container = source.split("/")[4]
    token = azurite.sas_token(container)
    signature = token.split("sig=")[1].split("&")[0]
    # One character changed: a signature that already starts with "A" gets a "B".
    tampered = token.replace(signature, ("B" if signature[0] == "A" else "A") + signature[1:])
    result, log = _fetch(source, tmp_path, {"sasToken": tampered})
    assert result.returncode == 4, result.stderr
    for output in (result.stdout, result.stderr, log):
        assert signature[1:12] not in output


def test_a_malformed_connection_string_file_is_a_usage_error_without_its_content(source, tmp_path):
    result, log = _fetch(source, tmp_path, {"connectionString": "just-a-secret-password"})
    assert result.returncode == 2
    assert "Key=Value" in log
    assert "just-a-secret-password" not in result.stderr + log
