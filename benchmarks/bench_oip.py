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
import sys
import tempfile
import urllib.request
from pathlib import Path

from _served_model import BATCH_ROWS, BIN, get_json, start_server, train, wrk_post


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
        folder = train(options.bundles or workdir / "bundles")
        process, port = start_server([BIN / "batcomputer-server"], folder, workdir)
        url = f"http://127.0.0.1:{port}"
        try:
            example = get_json(url + "/api/predict/params")["example"]
            metadata = get_json(url + "/v2/models/titanic")
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
                    result = wrk_post(url + path, body, workdir, options.duration, connections)
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
