"""batcomputer-azurite: start, status and stop a real Azurite by its recorded PID."""

import subprocess
import sys
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from batcomputer_dev.azurite import free_port

AZURITE = str(Path(sys.executable).parent / "batcomputer-azurite")


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AZURITE, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _running(pid: int) -> bool:
    # Reparented to PID 1 once the starting tool exits, it may linger as a zombie.
    try:
        return "azurite" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_start_status_stop_round_trip(tmp_path):
    port = str(free_port())
    location = ["--location", str(tmp_path / "azurite")]
    started = _tool("start", "--port", port, *location)
    assert started.returncode == 0, started.stderr
    try:
        export = started.stdout.splitlines()[0]
        connection_string = export.split("=", 1)[1].strip("'")
        assert f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1" in connection_string
        pid = int(started.stdout.split("pid: ")[1])
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--disableTelemetry" in command_line

        BlobServiceClient.from_connection_string(connection_string).create_container("alive")

        again = _tool("start", "--port", port, *location)
        assert again.returncode == 0
        assert f"already running (pid {pid})" in again.stderr
        assert _tool("status", *location).stdout == started.stdout
    finally:
        stopped = _tool("stop", *location)
    assert stopped.returncode == 0
    assert f"stopped (pid {pid})" in stopped.stderr
    assert not _running(pid)
    status = _tool("status", *location)
    assert status.returncode == 3
    assert "not running" in status.stderr
