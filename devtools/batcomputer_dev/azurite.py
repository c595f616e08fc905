"""Azurite, Microsoft's Blob Storage emulator, installed from npm and run as a local process.

Always started with ``--disableTelemetry`` (by default Azurite reports to an Azure host)
and ``--skipApiVersionCheck`` (azure-storage-blob 12.31 speaks a newer API version than
Azurite 3.35 knows). Installed once under ``${XDG_CACHE_HOME:-~/.cache}/batcomputer/tools``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from batcomputer_bundle.blob_uri import EMULATOR_ACCOUNT, EMULATOR_ACCOUNT_KEY

AZURITE_VERSION = "3.35.0"
ACCOUNT = EMULATOR_ACCOUNT
_STATE_FILE = "azurite.json"
_LOG_FILE = "azurite.log"


class AzuriteError(RuntimeError):
    pass


def tools_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "batcomputer" / "tools" / "azurite"


def default_location() -> Path:
    state = os.environ.get("BATCOMPUTER_STATE_DIR", "/var/lib/batcomputer")
    return Path(state) / "azurite"


def blob_endpoint(host: str, port: int) -> str:
    return f"http://{host}:{port}/{EMULATOR_ACCOUNT}"


def connection_string(host: str, port: int) -> str:
    """The well-known devstoreaccount1 connection string for an Azurite at host:port."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={EMULATOR_ACCOUNT};"
        f"AccountKey={EMULATOR_ACCOUNT_KEY};BlobEndpoint={blob_endpoint(host, port)};"
    )


def _installed_version(prefix: Path) -> str | None:
    package = prefix / "node_modules" / "azurite" / "package.json"
    try:
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def ensure_installed(prefix: Path | None = None) -> Path:
    """The ``azurite-blob`` executable, npm-installing Azurite first when it is missing."""
    prefix = prefix or tools_dir()
    executable = prefix / "node_modules" / ".bin" / "azurite-blob"
    if executable.exists() and _installed_version(prefix) == AZURITE_VERSION:
        return executable
    prefix.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--silent",
            f"azurite@{AZURITE_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not executable.exists():
        raise AzuriteError(
            f"npm install azurite@{AZURITE_VERSION} failed: {result.stderr.strip()[-1000:]}"
        )
    return executable


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    pid: int
    host: str
    port: int
    location: str

    @property
    def blob_endpoint(self) -> str:
        return blob_endpoint(self.host, self.port)

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.port)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(location: Path) -> str:
    try:
        return (location / _LOG_FILE).read_text()[-1500:].strip()
    except OSError:
        return ""


def start_azurite(
    host: str = "127.0.0.1",
    port: int = 10000,
    location: Path | None = None,
    *,
    timeout: float = 30.0,
) -> Azurite:
    """Start ``azurite-blob`` on host:port with its data (and PID record) in ``location``."""
    location = (location or default_location()).resolve()
    location.mkdir(parents=True, exist_ok=True)
    if _port_open(host, port):
        raise AzuriteError(f"{host}:{port} is already in use; is Azurite already running?")
    executable = ensure_installed()
    with (location / _LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            [
                str(executable),
                "--blobHost", host,
                "--blobPort", str(port),
                "--location", str(location / "data"),
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    azurite = Azurite(pid=process.pid, host=host, port=port, location=str(location))
    give_up_at = time.monotonic() + timeout
    while not _port_open(host, port):
        if process.poll() is not None:
            raise AzuriteError(f"Azurite exited with {process.returncode}: {_log_tail(location)}")
        if time.monotonic() > give_up_at:
            _terminate(process.pid)
            raise AzuriteError(f"Azurite did not listen on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.1)
    (location / _STATE_FILE).write_text(json.dumps(asdict(azurite)))
    return azurite


def _is_azurite(pid: int) -> bool:
    # A recorded PID may have been reused by an unrelated process since.
    try:
        return b"azurite-blob" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    give_up_at = time.monotonic() + grace
    while time.monotonic() < give_up_at:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped = 0 if _is_azurite(pid) else pid
        if reaped == pid:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def recorded(location: Path | None = None) -> Azurite | None:
    """The Azurite recorded in ``location`` if it is still running."""
    state = (location or default_location()).resolve() / _STATE_FILE
    try:
        azurite = Azurite(**json.loads(state.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return azurite if _is_azurite(azurite.pid) else None


def stop_azurite(azurite: Azurite) -> None:
    """Stop by PID (waiting for it to flush its data) and forget the record."""
    if _is_azurite(azurite.pid):
        _terminate(azurite.pid)
    state = Path(azurite.location) / _STATE_FILE
    if state.exists() and json.loads(state.read_text()).get("pid") == azurite.pid:
        state.unlink()


def ensure_running(host: str, port: int, location: Path | None = None) -> str:
    """Reuse the Azurite recorded in ``location`` or start one; return its connection string."""
    running = recorded(location)
    if running is None:
        running = start_azurite(host, port, location)
    elif (running.host, running.port) != (host, port):
        raise AzuriteError(
            f"the Azurite recorded in {running.location} listens on {running.host}:"
            f"{running.port}, not {host}:{port}; stop it first (batcomputer-azurite stop)"
        )
    return running.connection_string
