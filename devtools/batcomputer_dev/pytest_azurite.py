"""pytest plugin: real Azurite blob services for the test session.

``azurite`` listens on loopback; ``pod_azurite`` listens where the cluster's pods
reach the test host (needs the ``kube_cluster`` fixture).
"""

from __future__ import annotations

import datetime
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from batcomputer_bundle.blob_uri import EMULATOR_ACCOUNT, EMULATOR_ACCOUNT_KEY
from batcomputer_dev.azurite import Azurite, free_port, start_azurite, stop_azurite


@dataclass
class AzuriteService:
    """What tests need from the running emulator."""

    process: Azurite
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def blob_endpoint(self) -> str:
        """``http://127.0.0.1:<port>/devstoreaccount1``: prefix of every path-style URI."""
        return self.process.blob_endpoint

    @property
    def connection_string(self) -> str:
        return self.process.connection_string

    def service_client(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string)

    def make_container(self, stem: str = "test") -> str:
        """Create a fresh, uniquely named container and return its name."""
        name = f"{stem}-{next(self._names)}"
        self.service_client().create_container(name)
        return name

    def folder_uri(self, container: str, prefix: str = "") -> str:
        return "/".join(part for part in (self.blob_endpoint, container, prefix) if part)

    def sas_token(self, container: str, permission: str = "rl", hours: float = 1.0) -> str:
        """A container SAS (no leading '?') signed with the emulator's account key."""
        return generate_container_sas(
            EMULATOR_ACCOUNT,
            container,
            account_key=EMULATOR_ACCOUNT_KEY,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours),
        )

    def upload_folder(self, folder: Path, container: str, prefix: str) -> None:
        """Copy every file of a local folder under ``prefix`` (test setup, not the publisher)."""
        client = self.service_client().get_container_client(container)
        for path in sorted(folder.iterdir()):
            if path.is_file():
                client.upload_blob(f"{prefix}/{path.name}", path.read_bytes(), overwrite=True)


def credentials_environment(**credentials: str) -> dict[str, str]:
    """This process's environment with only ``credentials`` as AZURE_STORAGE_* variables, so
    a command under test sees exactly the credentials the test means it to."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE_")}
    return {**environ, **credentials}


def run_console_script(
    command: str, *args: str, **credentials: str
) -> subprocess.CompletedProcess[str]:
    """This venv's console script ``command`` run to completion with only ``credentials``."""
    return subprocess.run(
        [str(Path(sys.executable).parent / command), *args],
        env=credentials_environment(**credentials),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteService]:
    """A real Azurite on a free loopback port, telemetry disabled, stopped after the session."""
    process = start_azurite("127.0.0.1", free_port(), tmp_path_factory.mktemp("azurite"))
    try:
        yield AzuriteService(process)
    finally:
        stop_azurite(process)


@pytest.fixture(scope="session")
def pod_azurite(kube_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteService]:
    """Azurite on the address pods reach the test host at (the local cluster's bridge)."""
    host = kube_cluster.host_ip
    if host is None:
        pytest.fail("set BATCOMPUTER_HOST_IP to an address of this machine that pods can reach")
    process = start_azurite(host, free_port(host), tmp_path_factory.mktemp("pod-azurite"))
    try:
        yield AzuriteService(process)
    finally:
        stop_azurite(process)
