"""batcomputer-fetch as the init container runs it, against a real Azurite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batcomputer_bundle import bundle
from batcomputer_bundle.blob_uri import EMULATOR_ACCOUNT_KEY
from batcomputer_dev.azurite import connection_string, free_port, start_azurite, stop_azurite

FETCH = str(Path(sys.executable).parent / "batcomputer-fetch")
VERSION_PREFIX = "titanic/1.0.0"


def _environment(**credentials: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE_")}
    return {**environ, **credentials}


def _fetch(
    source: str, dest: Path, *extra: str, timeout: float = 120, **credentials: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    log = dest.parent / f"{dest.name}.termination-log"
    result = subprocess.run(
        [FETCH, "--source", source, "--dest", str(dest), "--termination-log", str(log), *extra],
        env=_environment(**credentials),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, log.read_text().strip() if log.exists() else ""


@pytest.fixture(scope="module")
def titanic(trained_bundles) -> Path:
    return Path(trained_bundles["titanic"])


@pytest.fixture(scope="module")
def container(azurite, titanic) -> str:
    """A container holding the trained titanic bundle under titanic/1.0.0."""
    name = azurite.make_container("fetch")
    azurite.upload_folder(titanic, name, VERSION_PREFIX)
    return name


def _doctored_copy(azurite, titanic: Path, tmp_path: Path, change) -> str:
    """Upload a copy of the bundle with one thing changed; return its folder URI."""
    copy = tmp_path / "doctored"
    shutil.copytree(titanic, copy)
    change(copy)
    container = azurite.make_container("doctored")
    azurite.upload_folder(copy, container, VERSION_PREFIX)
    return azurite.folder_uri(container, VERSION_PREFIX)


def test_fetch_writes_every_file_verified_and_leaves_no_partial_files(
    azurite, container, titanic, tmp_path
):
    dest = tmp_path / "bundle"
    source = azurite.folder_uri(container, VERSION_PREFIX)
    result, message = _fetch(
        source, dest, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 0, result.stderr
    manifest = bundle.verify_folder(dest)
    assert (manifest["name"], manifest["version"]) == ("titanic", "1.0.0")
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in titanic.iterdir())
    for name in manifest["files"]:
        assert bundle.sha256_file(dest / name) == bundle.sha256_file(titanic / name)
    assert not list(dest.glob("*.partial"))
    assert message.startswith(f"fetched titanic 1.0.0: {len(manifest['files'])} files verified")


@pytest.mark.parametrize("way", ["dev-storage", "env-sas", "uri-sas"])
def test_every_credential_source_reaches_the_uri_host(azurite, container, tmp_path, way):
    source = azurite.folder_uri(container, VERSION_PREFIX)
    sas = azurite.sas_token(container)
    credentials = {
        # The emulator shorthand names 127.0.0.1:10000; the URI's port must win.
        "dev-storage": {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"},
        "env-sas": {"AZURE_STORAGE_SAS_TOKEN": "?" + sas},
        "uri-sas": {},
    }[way]
    if way == "uri-sas":
        source += "?" + sas
    result, message = _fetch(source, tmp_path / "bundle", **credentials)
    assert result.returncode == 0, result.stderr
    assert message.startswith("fetched titanic 1.0.0")
    assert sas.split("sig=")[1] not in result.stderr


def test_missing_version_exits_3_naming_the_manifest_blob(azurite, container, tmp_path):
    source = azurite.folder_uri(container, "titanic/9.9.9")
    result, message = _fetch(
        source, tmp_path / "bundle", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 3
    assert message == f"blob not found: {source}/bundle.json"
    assert message in result.stderr


def test_missing_file_exits_3_naming_it_and_leaves_no_manifest(azurite, titanic, tmp_path):
    source = _doctored_copy(azurite, titanic, tmp_path, lambda d: (d / "lookup.pkl").unlink())
    dest = tmp_path / "bundle"
    result, message = _fetch(
        source, dest, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 3
    assert message == f"blob not found: {source}/lookup.pkl"
    assert not (dest / "bundle.json").exists()


def test_wrong_account_key_exits_4(azurite, container, tmp_path):
    wrong_key = EMULATOR_ACCOUNT_KEY[:-8] + "AAAAAA=="
    wrong = connection_string(azurite.process.host, azurite.process.port).replace(
        EMULATOR_ACCOUNT_KEY, wrong_key
    )
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        AZURE_STORAGE_CONNECTION_STRING=wrong,
    )
    assert result.returncode == 4
    assert message.startswith("authentication failed")
    assert wrong_key not in result.stderr + message


def test_tampered_sas_exits_4_without_echoing_the_signature(azurite, container, tmp_path):
    sas = azurite.sas_token(container)
    signature = sas.split("sig=")[1]
    tampered = sas.replace("sig=", "sig=AA")
    source = azurite.folder_uri(container, VERSION_PREFIX) + "?" + tampered
    result, message = _fetch(source, tmp_path / "bundle")
    assert result.returncode == 4
    assert message.startswith("authentication failed")
    assert signature not in result.stderr + message


def test_anonymous_access_to_a_private_container_exits_4(azurite, container, tmp_path):
    result, message = _fetch(azurite.folder_uri(container, VERSION_PREFIX), tmp_path / "bundle")
    assert result.returncode == 4
    assert message.startswith("authentication failed: no credentials given")


def _tamper_model(folder: Path) -> None:
    model = folder / "model.pkl"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")


def test_tampered_file_exits_5_and_is_never_written(azurite, container, titanic, tmp_path):
    dest = tmp_path / "bundle"
    earlier, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        dest,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert earlier.returncode == 0
    (dest / "model.pkl").unlink()
    source = _doctored_copy(azurite, titanic, tmp_path, _tamper_model)
    result, message = _fetch(
        source, dest, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 5
    assert message == "sha256 mismatch for model.pkl"
    assert not (dest / "model.pkl").exists()
    assert not list(dest.glob("*.partial"))
    assert not (dest / "bundle.json").exists()


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("model.pkl=" + "0" * 64, "sha256 mismatch for model.pkl"),
        ("weights.bin=" + "0" * 64, "pinned file weights.bin is not part of the bundle"),
    ],
)
def test_pin_that_the_bundle_cannot_satisfy_exits_5(azurite, container, tmp_path, pin, reason):
    result, message = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        "--sha256",
        pin,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert result.returncode == 5
    assert message.startswith(reason)


def test_right_pins_pass(azurite, container, titanic, tmp_path):
    pins = [f"--sha256={name}={bundle.sha256_file(titanic / name)}" for name in bundle.PICKLE_FILES]
    result, _ = _fetch(
        azurite.folder_uri(container, VERSION_PREFIX),
        tmp_path / "bundle",
        *pins,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
    )
    assert result.returncode == 0, result.stderr


def test_manifest_that_is_not_a_bundle_exits_7(azurite, titanic, tmp_path):
    source = _doctored_copy(
        azurite, titanic, tmp_path, lambda d: (d / "bundle.json").write_text('{"format": "x"}')
    )
    result, message = _fetch(
        source, tmp_path / "bundle", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string
    )
    assert result.returncode == 7
    assert "bundle.json has format 'x'" in message


def test_storage_that_stays_down_exits_6_after_the_bounded_retries(tmp_path):
    port = free_port()
    source = f"http://127.0.0.1:{port}/devstoreaccount1/models/{VERSION_PREFIX}"
    started = time.monotonic()
    # Back-offs 1 s + 2 s fit a 4 s window, the next 4 s would not: 3 attempts.
    result, message = _fetch(
        source,
        tmp_path / "bundle",
        "--timeout",
        "4",
        timeout=60,
        AZURE_STORAGE_CONNECTION_STRING=connection_string("127.0.0.1", port),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 6
    assert message.startswith("storage unreachable after 3 attempts")
    assert "Connection refused" in message
    print(f"unreachable storage: exit 6 after {elapsed:.1f} s (--timeout 4)")


def test_storage_down_then_up_within_the_retry_window_succeeds(titanic, tmp_path):
    port = free_port()
    location = tmp_path / "azurite"
    emulator = start_azurite("127.0.0.1", port, location)
    credentials = connection_string("127.0.0.1", port)
    try:
        client = BlobServiceClient.from_connection_string(credentials).create_container("models")
        for path in titanic.iterdir():
            client.upload_blob(f"{VERSION_PREFIX}/{path.name}", path.read_bytes())
    finally:
        stop_azurite(emulator)
    source = f"http://127.0.0.1:{port}/devstoreaccount1/models/{VERSION_PREFIX}"
    log = tmp_path / "termination-log"
    command = [FETCH, "--source", source, "--dest", str(tmp_path / "bundle")]
    command += ["--timeout", "60", "--termination-log", str(log)]
    started = time.monotonic()
    fetcher = subprocess.Popen(
        command,
        env=_environment(AZURE_STORAGE_CONNECTION_STRING=credentials),
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    assert fetcher.poll() is None, "the fetcher gave up while storage was down"
    emulator = start_azurite("127.0.0.1", port, location)
    try:
        _, stderr = fetcher.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        stop_azurite(emulator)
    assert fetcher.returncode == 0, stderr
    assert log.read_text().startswith("fetched titanic 1.0.0")
    bundle.verify_folder(tmp_path / "bundle")
    print(f"storage down 4 s then up: fetched after {elapsed:.1f} s")
