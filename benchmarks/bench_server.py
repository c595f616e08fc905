"""``batcomputer-server`` as in production, before and after, next to the engine limit.

    .venv/bin/python benchmarks/bench_server.py [--duration 8] [--slow-clients 1000]
                                  [--base REV] [--new REV] [--bundles DIR]

Trains (or reuses) the Titanic RandomForest(100, depth 8) of the shipped configuration,
then in one run:

* the engine limit: onnxruntime called in-process on one core, one row and 1,000-row
  batches of the bundle's held-out rows (and the predictor: validation + encoding +
  engine, on the same rows as named inputs, which are also what the servers are sent);
* the server of the base revision (default: the last gthread server that starts; the one
  right before the gevent workers could not import its bundle module) and the server of
  this tree (or of ``--new REV``), revisions checked out with ``git archive`` into a
  temporary folder this script owns and removes; each started as in production (2
  workers) on 127.0.0.1 and driven by ``wrk`` (Debian package) with 8 connections:
  requests/s with p50/p99, rows/s and their share of the engine limit on all cores,
  each run marked where the kernel gave all of wrk's connections to one worker (each
  worker listens on a socket of its own and keeps the connections it accepts); first
  quietly, then while ``--slow-clients`` connections trickle a header line a second
  (reconnecting when the server closes them), where it also times normal requests on
  fresh connections one after another; each server first serves ``WARM_UP_SECONDS``
  of single rows unmeasured;
* "HTTP stack alone": the same command line, worker and limits with an app that answers
  a constant (``_constant_app.py``), measured the same way: the ceiling this stack puts
  on any app, so how much of a goal lies beyond what the app itself can change.

Prints figures only; goals (forest, with the slow clients connected): one-row
requests/s at least the base's (aim 2x) with p99 <= 5 ms, batch rows/s >= 60 % of the
engine limit. Figures depend on what else the cores are doing: the load average is
printed alongside.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from _served_model import BATCH_ROWS, BIN, WORKERS, start_server, train, wrk_post

REPO = Path(__file__).resolve().parents[1]
NORMAL_REQUESTS = 20
WARM_UP_SECONDS = 2
CONSTANT_APP = Path(__file__).with_name("_constant_app.py")
BASE_REVISION = "9124870"
# A worker that spent more than this share of the CPU of a run served it (nearly) alone.
ONE_WORKER_SHARE = 0.9
GOALS = {"single_p99_ms": 5.0, "batch_share": 0.60, "single_factor": 2.0}


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
import json, os, sys
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


def _named_rows(predictor, matrix: np.ndarray) -> list[dict]:
    """Encoded rows back as the named inputs a client sends."""
    from batcomputer_bundle.bundle import CategoricalFeature

    def value(feature, number: float):
        if isinstance(feature, CategoricalFeature):
            return next(label for label, code in feature.codes.items() if code == number)
        return int(number) if feature.type == "integer" else float(number)

    features = predictor.features
    return [
        {f.name: value(f, number) for f, number in zip(features, row, strict=True)}
        for row in matrix.tolist()
    ]


def _in_process_here(folder: str) -> dict:
    from batcomputer_server.engines import OnnxEngine
    from batcomputer_server.predictor import Predictor

    engine = OnnxEngine((Path(folder) / "model.onnx").read_bytes())
    predictor = Predictor.load(folder)
    rows = np.asarray(json.loads((Path(folder) / "bundle.json").read_text())["self_check"]["rows"])
    one = rows[:1]
    batch = np.resize(rows, (BATCH_ROWS, rows.shape[1]))
    inputs = _named_rows(predictor, batch)
    if not np.array_equal(predictor.encode_many(inputs), batch):
        raise RuntimeError("the held-out rows do not encode back to themselves")
    return {
        "onnx_one_per_s": _rate(lambda: engine.probabilities(one)),
        "onnx_batch_rows_per_s": _rate(lambda: engine.probabilities(batch)) * BATCH_ROWS,
        "predictor_one_per_s": _rate(lambda: predictor.predict_one(inputs[0])),
        "predictor_batch_rows_per_s": _rate(lambda: predictor.predict_many(inputs)) * BATCH_ROWS,
        "rows": inputs,
    }


# -- the servers ----------------------------------------------------------------------


def _check_out(revision: str, folder: Path) -> str:
    """``revision``'s server package into ``folder``; its short name."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    archive = folder / "base.tar"
    with archive.open("wb") as sink:
        subprocess.run(
            ["git", "archive", "--format=tar", short, "server-image"],
            cwd=REPO, check=True, stdout=sink,
        )  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return short


def _cpu_seconds(server_pid: int) -> list[float]:
    """User + system CPU time each of the server's workers has used so far."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    spent = []
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        spent.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return spent


def _normal_requests(port: int, body: str) -> dict:
    """Latency of single-row requests on fresh connections, one after another."""
    times, failed = [], 0
    for _ in range(NORMAL_REQUESTS):
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("POST", "/api/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failed += 1
            else:
                times.append((time.perf_counter() - started) * 1000)
        except OSError:
            failed += 1
        finally:
            connection.close()
    return {
        "median_ms": statistics.median(times) if times else float("nan"),
        "max_ms": max(times) if times else float("nan"),
        "failed": failed,
    }


def _hold_slow_clients(port: int, count: int, ready, stop, reconnects) -> None:
    """``count`` connections that send a request head a line a second and never finish it."""
    import select

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sock.send(b"POST /api/predict HTTP/1.1\r\nHost: bench\r\n")
        return sock

    clients = [connect() for _ in range(count)]
    ready.set()
    while not stop.wait(1.0):
        closed, _, _ = select.select(clients, [], [], 0)  # answered (408) or closed
        for index, sock in enumerate(clients):
            try:
                if sock in closed:
                    raise ConnectionError
                sock.send(b"X-Slow: 1\r\n")
            except OSError:
                sock.close()
                clients[index] = connect()
                reconnects.value += 1
    for sock in clients:
        sock.close()


def _wrk_with_cpu(server_pid: int, port: int, *args) -> dict:
    before = _cpu_seconds(server_pid)
    figures = wrk_post(f"http://127.0.0.1:{port}/api/predict", *args)
    per_worker = [
        after - then for after, then in zip(_cpu_seconds(server_pid), before, strict=True)
    ]
    spent = sum(per_worker)
    figures["cpu_us"] = spent / figures["requests"] * 1e6 if figures["requests"] else float("nan")
    figures["one_worker"] = figures["requests"] > 0 and max(per_worker) > ONE_WORKER_SHARE * spent
    return figures


def _measure(server_pid: int, port: int, workdir: Path, options, rows: list[dict]) -> dict:
    one_body = json.dumps(rows[0])
    batch_body = json.dumps(rows)
    # The first seconds after a start measure the workers warming up, not serving.
    wrk_post(f"http://127.0.0.1:{port}/api/predict", one_body, workdir, WARM_UP_SECONDS, 8)
    figures = {}
    figures["single"] = _wrk_with_cpu(server_pid, port, one_body, workdir, options.duration, 8)
    figures["batch"] = _wrk_with_cpu(server_pid, port, batch_body, workdir, options.duration, 8)
    context = multiprocessing.get_context("fork")
    ready, stop, reconnects = context.Event(), context.Event(), context.Value("i", 0)
    holder = context.Process(
        target=_hold_slow_clients, args=(port, options.slow_clients, ready, stop, reconnects)
    )
    holder.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the slow clients could not connect")
        time.sleep(2)  # every slow client has begun its request
        figures["normal_under_attack"] = _normal_requests(port, one_body)
        figures["single_under_attack"] = _wrk_with_cpu(
            server_pid, port, one_body, workdir, options.duration, 8
        )
        figures["batch_under_attack"] = _wrk_with_cpu(
            server_pid, port, batch_body, workdir, options.duration, 8
        )
    finally:
        stop.set()
        holder.join(30)
    figures["reconnects"] = reconnects.value
    return figures


def _serve_and_measure(
    command: list, env: dict, folder: Path, rows: list[dict], options: argparse.Namespace
) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        process, port = start_server(command, folder, workdir, env)
        try:
            return _measure(process.pid, port, workdir, options, rows)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _mark(figures: dict) -> str:
    return " *" if figures["one_worker"] else ""


def _report(limits: dict, runs: dict[str, dict], options: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    limit = limits["onnx_batch_rows_per_s"] * cores
    print(
        f"engine limit, onnxruntime in-process on one core: one row "
        f"{limits['onnx_one_per_s']:,.0f}/s, 1,000-row batches "
        f"{limits['onnx_batch_rows_per_s']:,.0f} rows/s -> {limit:,.0f} rows/s on {cores} cores"
    )
    print(
        f"predictor in-process on one core (validation + encoding + engine): one row "
        f"{limits['predictor_one_per_s']:,.0f}/s, 1,000-row batches "
        f"{limits['predictor_batch_rows_per_s']:,.0f} rows/s"
    )
    names = list(runs)
    print(f"\nserver, {WORKERS} workers, wrk 8 connections, {options.duration} s each")
    print(f"{'':44}" + "".join(f"{name:>26}" for name in names))

    def row(label: str, cell) -> None:
        print(f"{label:44}" + "".join(f"{cell(runs[name]):>26}" for name in names))

    for key, label in (("", "quiet"), ("_under_attack", f"{options.slow_clients:,} slow clients")):
        row(
            f"{label}: one row req/s",
            lambda r, k=key: f"{r['single' + k]['rps']:,.0f}{_mark(r['single' + k])}",
        )
        row(
            "  p50 / p99 ms",
            lambda r, k=key: f"{r['single' + k]['p50_ms']:.2f} / {r['single' + k]['p99_ms']:.2f}",
        )
        row(
            "  1,000-row batches rows/s (share of limit)",
            lambda r, k=key: (
                f"{r['batch' + k]['rps'] * BATCH_ROWS:,.0f} "
                f"({r['batch' + k]['rps'] * BATCH_ROWS / limit:.0%}){_mark(r['batch' + k])}"
            ),
        )
        row(
            "  worker CPU per request, one row / batch us",
            lambda r, k=key: f"{r['single' + k]['cpu_us']:,.0f} / {r['batch' + k]['cpu_us']:,.0f}",
        )
        row(
            "  failed or timed-out requests (wrk)",
            lambda r, k=key: f"{r['single' + k]['failed'] + r['batch' + k]['failed']:,}",
        )
    row(
        "  normal request ms, median / max",
        lambda r: (
            f"{r['normal_under_attack']['median_ms']:.1f} / "
            f"{r['normal_under_attack']['max_ms']:.1f}"
        ),
    )
    row(
        f"  normal requests failed (of {NORMAL_REQUESTS})",
        lambda r: f"{r['normal_under_attack']['failed']}",
    )
    row("  slow clients closed by the server", lambda r: f"{r['reconnects']:,}")
    wrk_runs = ("single", "batch", "single_under_attack", "batch_under_attack")
    if any(run[key]["one_worker"] for run in runs.values() for key in wrk_runs):
        print(
            "* one worker served (nearly) all of that run: the kernel gave it every one of "
            "wrk's connections"
        )
    print(
        f"\ngoals with the slow clients connected: one row >= the base's req/s (aim "
        f"{GOALS['single_factor']:g}x) with p99 <= {GOALS['single_p99_ms']} ms; batches >= "
        f"{GOALS['batch_share']:.0%} of the engine limit"
    )
    print(f"load average now: {os.getloadavg()[0]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run [8]")
    parser.add_argument("--slow-clients", type=int, default=1000, help="slow clients [1000]")
    parser.add_argument(
        "--base", default=BASE_REVISION, help=f"revision to compare with [{BASE_REVISION}]"
    )
    parser.add_argument("--new", help="revision to measure [this working tree]")
    parser.add_argument("--bundles", type=Path, help="folder to train into / reuse")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * options.slow_clients)), hard)
    )
    print(f"cpus: {os.cpu_count()}  load average before: {os.getloadavg()[0]:.2f}")
    bundles = options.bundles or Path(tempfile.mkdtemp(prefix="bench-bundles-"))
    folder = train(bundles)
    limits = _in_process(folder)
    rows = limits.pop("rows")
    checkouts = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
    try:
        runs = {}
        for label, revision in (("base", options.base), ("new", options.new)):
            if revision is None:
                command, env, name = [BIN / "batcomputer-server"], {}, "this tree"
            else:
                (checkouts / label).mkdir()
                name = f"{label} {_check_out(revision, checkouts / label)}"
                command = [sys.executable, "-m", "batcomputer_server.server_cli"]
                env = {"PYTHONPATH": str(checkouts / label / "server-image")}
            runs[name] = _serve_and_measure(command, env, folder, rows, options)
        # The new tree's stack with a constant answer in place of the app: its ceiling.
        command = [sys.executable, CONSTANT_APP]
        runs["HTTP stack alone"] = _serve_and_measure(command, env, folder, rows, options)
    finally:
        shutil.rmtree(checkouts, ignore_errors=True)
        if options.bundles is None:
            shutil.rmtree(bundles, ignore_errors=True)
    print("\n== titanic RandomForest(100, depth 8)")
    _report(limits, runs, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
