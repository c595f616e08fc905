"""What the server benchmarks share: the trained Titanic bundle, a server on 127.0.0.1
started as in production (2 workers), and ``wrk`` posting one JSON body at it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
BATCH_ROWS = 1000
WORKERS = 2


def train(bundles: Path) -> Path:
    """The shipped configuration's Titanic model under ``bundles`` (trained once, then reused)."""
    folder = bundles / "titanic" / "1.0.0"
    if not (folder / "bundle.json").exists():
        subprocess.run(
            [BIN / "batcomputer-train", "titanic", "--version=1.0.0", "--out", bundles, "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def start_server(
    command: list, folder: Path, workdir: Path, env: dict | None = None
) -> tuple[subprocess.Popen, int]:
    """``command`` serving ``folder`` on a free port, once /readyz says ready; its log in
    ``workdir``."""
    port = free_port()
    env = {**os.environ, **(env or {}), "TMPDIR": str(workdir)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            *command,
            *("--bundle", folder, "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(WORKERS), "--log-level", "warning"),
            *("--max-batch-rows", str(BATCH_ROWS)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if get_json(url + "/readyz")["status"] == "ready":
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready:\n{(workdir / 'server.log').read_text()}")


def wrk_post(url: str, body: str, workdir: Path, duration: int, connections: int) -> dict:
    """``wrk`` POSTing ``body`` as JSON to ``url``: requests, requests/s, p50/p99 ms (NaN when
    nothing was answered) and failed requests (socket errors, timeouts and non-2xx)."""
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    output = subprocess.run(
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "2s"),
            *("-s", script, url),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+\w+)", output)
    p99 = re.search(r"99%\s+([\d.]+\w+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _milliseconds(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _milliseconds(p99.group(1)) if p99 else float("nan"),
        "failed": errors + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def _milliseconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
