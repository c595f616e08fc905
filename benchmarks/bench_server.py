"""Throughput of ``batcomputer-server`` as in production, next to the in-process limits.

    .venv/bin/python benchmarks/bench_server.py [--duration 10] [--bundles DIR]

Trains (or reuses) two Titanic bundles — the RandomForest(100, depth 8) of the shipped
configuration and a LogisticRegression — then, for each:

* in-process limits on one core: scikit-learn ``predict_proba`` and onnxruntime called
  directly, one row and 1,000-row batches;
* the real server (gunicorn, 2 workers) on 127.0.0.1 driven by ``wrk`` (Debian package)
  with a Lua script for the POST bodies: single-row requests/s with p50/p99, and rows/s
  in 1,000-row batches.

Prints figures only; goals (forest): >= 2,800 single-row requests/s with p99 <= 10 ms,
>= 300,000 rows/s in 1,000-row batches. Figures depend on what else the cores are doing:
the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
BATCH_ROWS = 1000
GOALS = {"single_rps": 2800, "single_p99_ms": 10.0, "batch_rows_per_s": 300_000}


def _train(bundles: Path) -> dict[str, Path]:
    wanted = {
        "RandomForest(100, depth 8)": ("1.0.0", []),
        "LogisticRegression": ("1.1.0", ["--estimator", "LogisticRegression"]),
    }
    folders = {}
    for label, (version, extra) in wanted.items():
        folder = bundles / "titanic" / version
        if not (folder / "bundle.json").exists():
            subprocess.run(
                [
                    BIN / "batcomputer-train",
                    *("titanic", "--version", version, "--out", bundles, "--quiet"),
                    *extra,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        folders[label] = folder
    return folders


# -- in-process limits ----------------------------------------------------------------


def _rate(call, minimum_seconds: float = 1.0) -> float:
    """Calls per second of ``call`` (best of three timed runs)."""
    call()
    count = 1
    while True:
        started = time.perf_counter()
        for _ in range(count):
            call()
        elapsed = time.perf_counter() - started
        if elapsed >= minimum_seconds / 4:
            break
        count *= 4
    best = elapsed
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, time.perf_counter() - started)
    return count / best


def _in_process(folder: Path) -> dict[str, float]:
    """Measured in a child pinned to one core, so the figures are per core."""
    code = f"""
import json, os, pickle, sys
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_server import _in_process_here
print(json.dumps(_in_process_here({str(folder)!r})))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _in_process_here(folder: str) -> dict[str, float]:
    import sklearn

    from batcomputer_bundle import bundle, safe_pickle
    from batcomputer_server.engines import OnnxEngine
    from batcomputer_server.predictor import Predictor

    model_types = bundle.read_manifest(Path(folder))["model_types"]
    model = safe_pickle.load_model((Path(folder) / "model.pkl").read_bytes(), model_types)
    engine = OnnxEngine((Path(folder) / "model.onnx").read_bytes())
    predictor = Predictor.load(folder)
    rows = np.asarray(json.loads((Path(folder) / "bundle.json").read_text())["self_check"]["rows"])
    one = rows[:1]
    batch = np.resize(rows, (BATCH_ROWS, rows.shape[1]))
    inputs = predictor.example()
    with sklearn.config_context(assume_finite=True):
        sklearn_one = _rate(lambda: model.predict_proba(one))
        sklearn_batch = _rate(lambda: model.predict_proba(batch)) * BATCH_ROWS
    return {
        "sklearn_one_per_s": sklearn_one,
        "sklearn_batch_rows_per_s": sklearn_batch,
        "onnx_one_per_s": _rate(lambda: engine.probabilities(one)),
        "onnx_batch_rows_per_s": _rate(lambda: engine.probabilities(batch)) * BATCH_ROWS,
        "predictor_one_per_s": _rate(lambda: predictor.predict_one(inputs)),
        "predictor_batch_rows_per_s": _rate(lambda: predictor.predict_many([inputs] * BATCH_ROWS))
        * BATCH_ROWS,
    }


# -- the real server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _start_server(folder: Path, workdir: Path, workers: int, threads: int) -> tuple:
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(workdir)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            BIN / "batcomputer-server",
            *("--bundle", folder, "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(workers), "--threads", str(threads)),
            *("--log-level", "warning", "--max-batch-rows", str(BATCH_ROWS)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _get(url + "/readyz")["status"] == "ready":
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready:\n{(workdir / 'server.log').read_text()}")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _worker_pids(server_pid: int) -> list[int]:
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _wrk(url: str, body: str, workdir: Path, duration: int, connections: int) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    output = subprocess.run(
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"),
            *("-s", script, url + "/api/predict"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw failed requests:\n{output}")
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _milliseconds(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        "p99_ms": _milliseconds(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
    }


def _milliseconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _serve_and_measure(folder: Path, options: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
    process, url = _start_server(folder, workdir, options.workers, options.threads)
    try:
        example = _get(url + "/api/predict/params")["example"]
        engine = _get(url + "/api/info")["engine"]
        workers = _worker_pids(process.pid)
        before = _cpu_seconds(workers)
        single = _wrk(url, json.dumps(example), workdir, options.duration, options.connections)
        middle = _cpu_seconds(workers)
        batch_body = json.dumps([example] * BATCH_ROWS)
        batch = _wrk(url, batch_body, workdir, options.duration, options.batch_connections)
        after = _cpu_seconds(workers)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "engine": engine,
        "single": single,
        "single_cpu_us": (middle - before) / single["requests"] * 1e6,
        "batch_rows_per_s": batch["rps"] * BATCH_ROWS,
        "batch_cpu_us": (after - middle) / batch["requests"] * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run [10]")
    parser.add_argument("--connections", type=int, default=8, help="wrk single-row conns [8]")
    parser.add_argument("--batch-connections", type=int, default=4, help="batch conns [4]")
    parser.add_argument("--workers", type=int, default=2, help="server workers [2]")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker [2]")
    parser.add_argument("--bundles", type=Path, help="folder to train into / reuse")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    bundles = options.bundles or Path(tempfile.mkdtemp(prefix="bench-bundles-"))
    print(f"cpus: {os.cpu_count()}  load average before: {os.getloadavg()[0]:.2f}")
    for label, folder in _train(bundles).items():
        limits = _in_process(folder)
        served = _serve_and_measure(folder, options)
        single = served["single"]
        print(f"\n== titanic {label} ({folder})")
        print("in-process, one core:")
        print(
            f"  scikit-learn  one row {limits['sklearn_one_per_s']:>10,.0f}/s   "
            f"1,000-row batches {limits['sklearn_batch_rows_per_s']:>12,.0f} rows/s"
        )
        print(
            f"  onnxruntime   one row {limits['onnx_one_per_s']:>10,.0f}/s   "
            f"1,000-row batches {limits['onnx_batch_rows_per_s']:>12,.0f} rows/s"
        )
        print(
            f"  predictor     one row {limits['predictor_one_per_s']:>10,.0f}/s   "
            f"1,000-row batches {limits['predictor_batch_rows_per_s']:>12,.0f} rows/s "
            "(validation + encoding + engine)"
        )
        print(
            f"server ({options.workers} workers x {options.threads} threads, "
            f"engine {served['engine']}, wrk {options.connections} conns):"
        )
        print(
            f"  single row    {single['rps']:>10,.0f} req/s   p50 {single['p50_ms']:.2f} ms   "
            f"p99 {single['p99_ms']:.2f} ms"
        )
        print(f"  1,000-row batches {served['batch_rows_per_s']:>12,.0f} rows/s")
        cores = os.cpu_count() or 1
        print(
            f"  worker CPU per request: single {served['single_cpu_us']:,.0f} us, "
            f"batch {served['batch_cpu_us']:,.0f} us -> with {cores} idle cores at most "
            f"{cores / served['single_cpu_us'] * 1e6:,.0f} req/s, "
            f"{cores / served['batch_cpu_us'] * 1e6 * BATCH_ROWS:,.0f} rows/s "
            "(before wrk's own share)"
        )
        print(f"  load average now: {os.getloadavg()[0]:.2f}")
    print(
        f"\ngoals for the forest: >= {GOALS['single_rps']:,} req/s with p99 <= "
        f"{GOALS['single_p99_ms']} ms; >= {GOALS['batch_rows_per_s']:,} rows/s in batches"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
