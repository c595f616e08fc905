"""Run the real ``batcomputer-server`` (gunicorn, 2 workers) as a subprocess for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVER = Path(sys.executable).with_name("batcomputer-server")
# A valid /api/predict body for the trained Titanic bundle.
PASSENGER = {
    "pclass": "3rd",
    "sex": "male",
    "age": 30,
    "sibsp": 0,
    "parch": 0,
    "fare": 8.05,
    "embarked": "Southampton",
}


@dataclass
class RunningServer:
    url: str
    log: Path
    tmpdir: Path
    home: Path
    process: subprocess.Popen

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(
    bundle: Path, workdir: Path, *extra: str, workers: int = 2, port: int | None = None
) -> Iterator[RunningServer]:
    """Start the server on `port` (default: a free loopback port); wait until /healthz answers."""
    port = port or free_port()
    tmpdir, home = workdir / "tmp", workdir / "home"
    tmpdir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "BATCOMPUTER_ROOT_PATH")
    }
    env.update(TMPDIR=str(tmpdir), HOME=str(home))
    log = workdir / "server.log"
    command = [
        str(SERVER),
        "--bundle",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *extra,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=home
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(url, process, log)
        yield RunningServer(url=url, log=log, tmpdir=tmpdir, home=home, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_health(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer /healthz within 60 s:\n{log.read_text()}")


def wait_until_workers_loaded(server: RunningServer, workers: int = 2) -> None:
    """Both workers have logged their bundle verdict (ready or not)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = server.log_text()
        if text.count("NOT READY") + text.count("] [INFO] batcomputer_server: serving") >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError(f"workers did not load the bundle:\n{server.log_text()}")
