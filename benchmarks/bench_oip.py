"""The Open Inference Protocol v2 next to the friendly API, on the same server.

    .venv/bin/python benchmarks/bench_oip.py [--duration 8] [--bundles DIR]

Trains (or reuses) the Titanic model of the shipped configuration, starts
``batcomputer-server`` as in production (2 workers) on 127.0.0.1, and drives it with
``wrk`` (Debian package): one row with 8 connections, then 1,000-row batches with 4,
each first as ``POST /api/predict`` (a JSON object or array of objects) and then as
``POST /v2/models/titanic/infer`` (one named tensor per input). Prints requests/s, p50
and p99 latency, rows/s, and the OIP figure as a share of the friendly API's. Figures
depend on what else the cores are doing: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
BATCH_ROWS = 1000
WORKERS = 2


def _train(bundles: Path) -> Path:
    folder = bundles / "titanic" / "1.0.0"
    if not (folder / "bundle.json").exists():
        subprocess.run(
            [BIN / "batcomputer-train", "titanic", "--version=1.0.0", "--out", bundles, "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _start_server(folder: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(workdir)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            *(BIN / "batcomputer-server", "--bundle", folder, "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", str(WORKERS), "--log-level", "warning"),
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
            if _get(url + "/readyz")["status"] == "ready":
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready:\n{(workdir / 'server.log').read_text()}")


def _milliseconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk(url: str, body: str, workdir: Path, duration: int, connections: int) -> dict:
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
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _milliseconds(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        "p99_ms": _milliseconds(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
        "failed": errors + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def _oip_request(metadata: dict, rows: list[dict]) -> dict:
    return {
        "inputs": [
            {
                "name": tensor["name"],
                "shape": [len(rows)],
                "datatype": tensor["datatype"],
                "data": [row[tensor["name"]] for row in rows],
            }
            for tensor in metadata["inputs"]
        ]
    }


def _check_same_answers(url: str, friendly: str, oip: str) -> None:
    """Both bodies score the same rows to the same probabilities (else nothing is compared)."""

    def post(path: str, body: str) -> dict | list:
        request = urllib.request.Request(
            url + path, body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    answer = post("/api/predict", friendly)
    rows = answer if isinstance(answer, list) else [answer]
    outputs = {o["name"]: o["data"] for o in post("/v2/models/titanic/infer", oip)["outputs"]}
    for flag, values in outputs.items():
        if [row[flag] for row in rows] != values:
            raise RuntimeError(f"the two APIs disagree on {flag}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--bundles", type=Path, help="where to train (default: a temp folder)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-oip-") as temporary:
        workdir = Path(temporary)
        folder = _train(options.bundles or workdir / "bundles")
        process, url = _start_server(folder, workdir)
        try:
            example = _get(url + "/api/predict/params")["example"]
            metadata = _get(url + "/v2/models/titanic")
            cases = {
                "one row": (json.dumps(example), json.dumps(_oip_request(metadata, [example])), 8),
                f"{BATCH_ROWS}-row batch": (
                    json.dumps([example] * BATCH_ROWS),
                    json.dumps(_oip_request(metadata, [example] * BATCH_ROWS)),
                    4,
                ),
            }
            print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
            print(f"{'':22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'rows/s':>10}{'failed':>8}")
            for label, (friendly, oip, connections) in cases.items():
                _check_same_answers(url, friendly, oip)
                rows = BATCH_ROWS if "batch" in label else 1
                figures = {}
                for api, path, body in (
                    ("friendly", "/api/predict", friendly),
                    ("OIP v2", "/v2/models/titanic/infer", oip),
                ):
                    result = _wrk(url + path, body, workdir, options.duration, connections)
                    figures[api] = result
                    print(
                        f"{label + ', ' + api:22}{result['rps']:>9.0f}{result['p50_ms']:>9.2f}"
                        f"{result['p99_ms']:>9.2f}{result['rps'] * rows:>10.0f}"
                        f"{result['failed']:>8}"
                    )
                share = figures["OIP v2"]["rps"] / figures["friendly"]["rps"]
                print(f"{label + ', OIP/friendly':22}{share:>9.0%}")
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
