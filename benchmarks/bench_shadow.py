"""What shadow traffic costs the callers of the serving version.

    .venv/bin/python benchmarks/bench_shadow.py [--duration 8] [--bundles DIR]

Trains (or reuses) the Titanic forest, then drives the serving server (2 workers, as in
production) with ``wrk`` (8 connections, single rows) four times: without shadow; copying
every prediction (``--shadow-percent 100``) to a live candidate server (the same bundle,
so on this machine it competes for the same cores); to a port that refuses connections;
and to a socket that accepts and never answers (``--shadow-timeout 1``). Prints
requests/s, p50/p99 and failed requests of the callers, and how many copies were
compared, failed or dropped (queue full). Goal: no failed caller request in any run, and
a dead or silent candidate costing the callers no more than the copies' own bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from _served_model import BIN, free_port, start_server, train, wrk_post

from batcomputer_operator import analysis

EXAMPLE = {
    "pclass": "3rd",
    "sex": "male",
    "age": 30,
    "sibsp": 0,
    "parch": 0,
    "fare": 8.05,
    "embarked": "Southampton",
}


def _silent_listener() -> tuple[socket.socket, str]:
    """A socket that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def _copies(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        scrape = analysis.parse(response.read().decode())
    return {
        outcome: round(scrape.total("batcomputer_shadow_requests_total", outcome=outcome))
        for outcome in ("compared", "error", "dropped")
    }


def _run(label: str, folder: Path, workdir: Path, duration: int, shadow: list[str]) -> dict:
    run_dir = workdir / label.replace(" ", "-")
    run_dir.mkdir()
    command = [str(BIN / "batcomputer-server"), *shadow]
    process, port = start_server(command, folder, run_dir)
    try:
        url = f"http://127.0.0.1:{port}/api/predict"
        figures = wrk_post(url, json.dumps(EXAMPLE), run_dir, duration, 8)
        figures["copies"] = _copies(port) if shadow else {}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run [8]")
    parser.add_argument("--bundles", type=Path, help="where to train/reuse the bundle")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as scratch:
        workdir = Path(scratch)
        folder = train(options.bundles or workdir / "bundles")
        candidate, candidate_port = start_server(
            [str(BIN / "batcomputer-server")], folder, _mkdir(workdir / "candidate")
        )
        silent, silent_url = _silent_listener()
        try:
            runs = {
                "no shadow": [],
                "live candidate": ["--shadow-url", f"http://127.0.0.1:{candidate_port}"],
                "refusing port": ["--shadow-url", f"http://127.0.0.1:{free_port()}"],
                "silent socket": ["--shadow-url", silent_url, "--shadow-timeout", "1"],
            }
            results = {
                label: _run(label, folder, workdir, options.duration, flags)
                for label, flags in runs.items()
            }
        finally:
            silent.close()
            candidate.send_signal(signal.SIGTERM)
            candidate.wait(timeout=30)
    print(f"load average {os.getloadavg()[0]:.1f}; wrk 8 connections, {options.duration} s each")
    print(f"{'shadow':16} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}  copies")
    for label, figures in results.items():
        copies = ", ".join(f"{k} {v}" for k, v in figures["copies"].items()) or "-"
        print(
            f"{label:16} {figures['rps']:8.0f} {figures['p50_ms']:7.2f} "
            f"{figures['p99_ms']:7.2f} {figures['failed']:6d}  {copies}"
        )
    return 0


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


if __name__ == "__main__":
    raise SystemExit(main())
