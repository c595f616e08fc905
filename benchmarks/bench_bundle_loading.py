"""What safe loading costs: the bundle readers next to plain ``pickle.loads``.

    .venv/bin/python benchmarks/bench_bundle_loading.py [--bundles DIR] [--repeat 7]

Trains (or reuses) the shipped titanic and crime bundles, then prints, per model, the
median of ``--repeat`` runs in milliseconds of: plain ``pickle.loads`` of ``model.pkl``
(what the server must never do), the static scan training records as ``model_types``,
the allow-list reader (scan, checked pure-Python unpickler, size walk), the data reader
on ``lookup.pkl``, and ``Predictor.load`` of the bundle as shipped (a verified
``model.onnx``: ``model.pkl`` unread) and without ``model.onnx`` (the allow-list reader
plus ONNX conversion at load). Prints figures only; the goal is that a worker still
loads its bundle well within a second.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from batcomputer_bundle import bundle, safe_pickle
from batcomputer_server.predictor import Predictor

BIN = Path(sys.executable).parent
MODELS = ("titanic", "crime")


def _train(bundles: Path, model: str) -> Path:
    folder = bundles / model / "1.0.0"
    if not (folder / bundle.MANIFEST_FILE).exists():
        command = [BIN / "batcomputer-train", model, "--version", "1.0.0", "--out", bundles]
        subprocess.run([*command, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return folder


def _median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _without_onnx(folder: Path, scratch: Path) -> Path:
    copy = shutil.copytree(folder, scratch / "without-onnx" / folder.parent.name)
    (copy / bundle.ONNX_FILE).unlink()
    manifest = bundle.read_manifest(copy)
    manifest["onnx"] = None
    manifest["files"] = bundle.describe_files(copy, list(bundle.PICKLE_FILES))
    bundle.write_manifest(copy, {k: v for k, v in manifest.items() if k != "format"})
    return copy


def _figures(folder: Path, plain: Path, repeat: int) -> tuple[float, ...]:
    data = (folder / bundle.MODEL_FILE).read_bytes()
    lookup = (folder / bundle.LOOKUP_FILE).read_bytes()
    types = bundle.read_manifest(folder)["model_types"]
    return (
        len(data) / 1024,
        _median_ms(lambda: pickle.loads(data), repeat),  # our own freshly trained file
        _median_ms(lambda: safe_pickle.global_names(data), repeat),
        _median_ms(lambda: safe_pickle.load_model(data, types), repeat),
        _median_ms(lambda: safe_pickle.load_data(lookup), repeat),
        _median_ms(lambda: Predictor.load(folder), repeat),
        _median_ms(lambda: Predictor.load(plain), repeat),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=Path, help="folder to train into / reuse")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure [7]")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-loading-"))
    bundles = options.bundles or scratch / "bundles"
    repeat = options.repeat
    try:
        columns = ("model.pkl KiB", "pickle.loads", "scan", "load_model", "load_data")
        columns += ("Predictor.load (onnx)", "Predictor.load (no onnx)")
        print("median ms over", repeat, "runs")
        print(f"{'model':8}" + "".join(f"{name:>{len(name) + 2}}" for name in columns))
        for model in MODELS:
            folder = _train(bundles, model)
            figures = _figures(folder, _without_onnx(folder, scratch), repeat)
            cells = zip(columns, figures, strict=True)
            print(f"{model:8}" + "".join(f"{n:>{len(name) + 2}.1f}" for name, n in cells))
    finally:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
