"""Small real bundles for the server's unit tests: fitted scikit-learn models, written
with ``batcomputer_bundle.bundle`` exactly as training does, so each test can bend one
thing (a tampered file, a wrong lookup, a missing ONNX file) and see the server react.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from batcomputer_bundle import bundle, onnx_convert, safe_pickle

LOOKUP = {
    "sex": {"female": 0, "male": 1},
    "pclass": {"1st": 0, "2nd": 1, "3rd": 2},
    "age": {"type": "number", "minimum": 0.42, "maximum": 80.0},
    "sibsp": {"type": "integer", "minimum": 0.0, "maximum": 8.0},
}
FLAGS = ["died", "survived"]


def training_data(rows: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = np.column_stack(
        [
            rng.integers(0, 2, rows),
            rng.integers(0, 3, rows),
            rng.uniform(0.42, 80.0, rows).round(1),
            rng.integers(0, 9, rows),
        ]
    ).astype(np.float64)
    chance = 0.8 - 0.5 * matrix[:, 0] - 0.15 * matrix[:, 1] - 0.002 * matrix[:, 2]
    target = (rng.uniform(size=rows) < chance).astype(int)
    return matrix, target


def fitted(estimator: str = "RandomForestClassifier") -> Any:
    matrix, target = training_data()
    model = (
        RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0)
        if estimator == "RandomForestClassifier"
        else LogisticRegression(max_iter=500)
    )
    return model.fit(matrix, target)


def write_bundle(
    folder: Path,
    *,
    model: Any = None,
    lookup: Any = None,
    flags: Any = None,
    with_onnx: bool = True,
    with_self_check: bool = True,
    manifest_features: list[dict[str, Any]] | None = None,
    model_types: list[str] | None = None,
) -> Path:
    """Write a complete, consistent bundle (unless told otherwise) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = fitted() if model is None else model
    lookup = LOOKUP if lookup is None else lookup
    flags = FLAGS if flags is None else flags
    for name, content in (
        (bundle.MODEL_FILE, model),
        (bundle.LOOKUP_FILE, lookup),
        (bundle.FLAGS_FILE, flags),
    ):
        (folder / name).write_bytes(pickle.dumps(content, protocol=5))
    if model_types is None:
        model_types = safe_pickle.global_names((folder / bundle.MODEL_FILE).read_bytes())
    features = bundle.features_from_lookup(
        lookup, feature_order=[entry["name"] for entry in manifest_features or []] or None
    )
    matrix, _ = training_data(rows=64, seed=11)
    files = list(bundle.PICKLE_FILES)
    onnx_section = None
    if with_onnx:
        onnx_bytes = onnx_convert.to_onnx(model, matrix.shape[1])
        (folder / bundle.ONNX_FILE).write_bytes(onnx_bytes)
        difference = onnx_convert.max_abs_difference(
            onnx_bytes, matrix, model.predict_proba(matrix)
        )
        onnx_section = {
            "file": bundle.ONNX_FILE,
            "opset": onnx_convert.opset(onnx_bytes),
            "max_abs_diff": difference,
            "tolerance": onnx_convert.TOLERANCE,
            "rows_checked": len(matrix),
        }
        files.append(bundle.ONNX_FILE)
    bundle.write_manifest(
        folder,
        {
            "name": "titanic",
            "version": "1.0.0",
            "created_at": "2026-11-22T00:00:00Z",
            "python_version": "3.11",
            "sklearn_version": "1.9.1",
            "estimator": type(model).__name__,
            "model_types": model_types,
            "params": {},
            "features": manifest_features or [bundle.feature_to_json(f) for f in features],
            "flags": list(flags),
            "files": bundle.describe_files(folder, files),
            "schema_digest": bundle.schema_digest(features, flags),
            "metrics": {"accuracy": 0.8, "n_train": 400, "n_test": 100},
            "data_source": {"description": "synthetic passengers for tests"},
            "self_check": {
                "rows": matrix.tolist(),
                "probabilities": model.predict_proba(matrix).tolist(),
            }
            if with_self_check
            else None,
            "onnx": onnx_section,
        },
    )
    return folder


def refresh_digests(folder: Path) -> None:
    """Re-record every file's digest after a test rewrote one (a consistent forgery)."""
    manifest = bundle.read_manifest(folder)
    manifest["files"] = bundle.describe_files(folder, list(manifest["files"]))
    manifest.pop("format")
    bundle.write_manifest(folder, manifest)
