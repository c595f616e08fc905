"""One training pipeline for every model: configuration → bundle folder.

raw rows → derived columns → flags → cleaned table → held-out split → feature
schema (categorical labels → codes in label order; numeric bounds as observed;
missing numbers imputed with the training median) → float64 matrix → fitted
estimator → held-out metrics → ONNX export checked on every held-out row → bundle
written with :mod:`batcomputer_bundle.bundle`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import pickle
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn import metrics as skmetrics
from sklearn.base import ClassifierMixin
from sklearn.model_selection import train_test_split

from batcomputer_bundle import bundle, onnx_convert, reference, safe_pickle
from batcomputer_bundle.bundle import CategoricalFeature, Feature, NumericFeature
from batcomputer_training import datasets
from batcomputer_training.config import Config, FeatureSpec, Target

SELF_CHECK_ROWS = 64
ESTIMATOR_MODULES = (
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.tree",
    "sklearn.naive_bayes",
    "sklearn.neighbors",
    "sklearn.svm",
    "sklearn.discriminant_analysis",
    "sklearn.neural_network",
)

Log = Callable[[str], None]


class TrainingError(Exception):
    """The data, the estimator or its parameters do not allow training; the message says why."""


class BundleExistsError(TrainingError):
    """The output folder already holds that version (versions are immutable)."""


# ---------------------------------------------------------------- data → table


@dataclass
class Prepared:
    """Cleaned rows: one column per feature (labels as text, numbers as float, NaN = missing)."""

    table: pd.DataFrame
    y: np.ndarray
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)


def _require_columns(frame: pd.DataFrame, needed: Mapping[str, str]) -> None:
    missing = {column: why for column, why in needed.items() if column not in frame.columns}
    if missing:
        listed = "; ".join(f"{column!r} ({why})" for column, why in missing.items())
        raise TrainingError(f"the data lacks column(s) {listed}; it has {list(frame.columns)}")


def add_derived(config: Config, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for derived in config.derived:
        _require_columns(frame, {derived.source: f"source of derived column {derived.name!r}"})
        source = frame[derived.source].astype("string").str.strip()
        if derived.regex is not None:
            frame[derived.name] = source.str.extract(derived.regex, expand=False)
        else:
            frame[derived.name] = source.map(dict(derived.mapping or {}))
    return frame


def group_flags(target: Target, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Class index of each raw target value, and the mask of rows that have one.

    Missing values are dropped; a value grouped under no flag is an error naming it,
    so new data with a new outcome category cannot be silently mislabelled.
    """
    text = values.astype("string").str.strip()
    present = (text.notna() & (text != "")).to_numpy(dtype=bool)
    index_of = target.flag_of()
    codes = text.map(index_of)
    unmapped = text[present & codes.isna().to_numpy(dtype=bool)]
    if len(unmapped):
        counts = unmapped.value_counts()
        shown = ", ".join(f"{label!r} ({n} rows)" for label, n in counts.head(8).items())
        more = f" and {len(counts) - 8} more" if len(counts) > 8 else ""
        raise TrainingError(
            f"target {target.column!r}: value(s) grouped under no flag: {shown}{more}; "
            "add each to one list under [target.flags]"
        )
    result = np.full(len(text), -1, dtype=np.int64)
    result[present] = codes[present].astype(int).to_numpy()
    return result, present


def prepare(config: Config, raw: pd.DataFrame) -> Prepared:
    frame = add_derived(config, raw)
    needed = {config.target.column: "target"}
    needed |= {f.column: f"feature {f.name!r}" for f in config.features}
    _require_columns(frame, needed)
    dropped: dict[str, int] = {}
    y, has_target = group_flags(config.target, frame[config.target.column])
    _note(dropped, f"no {config.target.column}", int((~has_target).sum()))
    keep = has_target.copy()
    table = pd.DataFrame(index=frame.index)
    for spec in config.features:
        column = frame[spec.column]
        if spec.type == "categorical":
            labels = column.astype("string").str.strip()
            labels = labels.where(labels != "")
            missing = labels.isna().to_numpy(dtype=bool)
            _note(dropped, f"no {spec.name}", int((keep & missing).sum()))
            keep &= ~missing
            table[spec.name] = labels
        else:
            table[spec.name] = _numbers(spec, column)
            if spec.impute == "drop":
                missing = table[spec.name].isna().to_numpy(dtype=bool)
                _note(dropped, f"no {spec.name}", int((keep & missing).sum()))
                keep &= ~missing
    for spec in config.features:
        if spec.type != "categorical":
            continue
        labels = table[spec.name]
        if spec.values is not None:
            outside = ~labels.isin(spec.values).to_numpy(dtype=bool)
            _note(dropped, f"{spec.name} not in its configured values", int((keep & outside).sum()))
            keep &= ~outside
        if spec.min_count > 1:
            counts = labels[keep].value_counts()
            rare = labels.isin(counts[counts < spec.min_count].index).to_numpy(dtype=bool)
            _note(dropped, f"{spec.name} seen < {spec.min_count} times", int((keep & rare).sum()))
            keep &= ~rare
    table = table[keep].reset_index(drop=True)
    y = y[keep]
    if len(table) == 0:
        raise TrainingError("no rows left after cleaning the data")
    counts = np.bincount(y, minlength=len(config.target.flags))
    empty = [flag for flag, n in zip(config.target.flags, counts, strict=True) if n < 2]
    if empty:
        raise TrainingError(
            f"flag(s) {empty} have fewer than 2 rows in the data; every flag must be a class "
            "the model can learn (merge or remove them in [target.flags])"
        )
    return Prepared(table=table, y=y, rows_read=len(raw), dropped=dropped)


def _note(dropped: dict[str, int], reason: str, count: int) -> None:
    if count:
        dropped[reason] = dropped.get(reason, 0) + count


def _numbers(spec: FeatureSpec, column: pd.Series) -> pd.Series:
    text = column.astype("string").str.strip()
    text = text.where(text != "")
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna() & numbers.isna()
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise TrainingError(
            f"feature {spec.name!r} ({spec.type}): {int(bad.sum())} value(s) are not numbers, "
            f"e.g. {examples}"
        )
    finite = numbers.dropna()
    if not np.isfinite(finite).all():
        raise TrainingError(f"feature {spec.name!r}: infinite values in the data")
    if spec.type == "integer" and (finite != np.floor(finite)).any():
        example = finite[finite != np.floor(finite)].iloc[0]
        raise TrainingError(
            f"feature {spec.name!r} is declared integer but holds {example}; declare it 'number'"
        )
    return numbers


# ---------------------------------------------------------------- schema and encoding


@dataclass(frozen=True)
class Schema:
    features: tuple[Feature, ...]
    imputed: dict[str, dict[str, float | int]]
    """Feature → ``{"median": training median, "rows": rows imputed}``."""

    @property
    def medians(self) -> dict[str, float]:
        return {name: float(entry["median"]) for name, entry in self.imputed.items()}


def build_schema(config: Config, table: pd.DataFrame, train_rows: np.ndarray) -> Schema:
    """Features in configuration order; categorical codes follow label order.

    Labels are the configured ``values`` in their order, else the observed labels
    sorted. Numeric bounds are the configured ones, else the observed min/max over all
    cleaned rows (so the schema, and its digest, depend only on configuration + data).
    """
    features: list[Feature] = []
    imputed: dict[str, dict[str, float | int]] = {}
    for spec in config.features:
        column = table[spec.name]
        if spec.type == "categorical":
            labels = list(spec.values) if spec.values is not None else sorted(column.unique())
            features.append(
                CategoricalFeature(spec.name, {str(v): i for i, v in enumerate(labels)})
            )
            continue
        observed = column.dropna()
        if observed.empty:
            raise TrainingError(f"feature {spec.name!r} has no values at all")
        minimum = spec.minimum if spec.minimum is not None else float(observed.min())
        maximum = spec.maximum if spec.maximum is not None else float(observed.max())
        features.append(NumericFeature(spec.name, spec.type, minimum, maximum))  # type: ignore[arg-type]
        missing = int(column.isna().sum())
        if missing:
            train_values = column.iloc[train_rows].dropna()
            median = float(train_values.median())
            if spec.type == "integer":
                median = float(math.floor(median + 0.5))
            imputed[spec.name] = {"median": median, "rows": missing}
    return Schema(features=tuple(features), imputed=imputed)


def encode(
    features: Sequence[Feature], table: pd.DataFrame, medians: Mapping[str, float] | None = None
) -> np.ndarray:
    """The float64 matrix: one column per feature in schema order (docs/architecture.md)."""
    medians = medians or {}
    columns = []
    for feature in features:
        values = table[feature.name]
        if isinstance(feature, CategoricalFeature):
            codes = values.map(dict(feature.codes))
            unknown = values[codes.isna()]
            if len(unknown):
                raise TrainingError(
                    f"feature {feature.name!r}: label(s) {sorted(map(str, unknown.unique()))[:5]} "
                    f"are not among {feature.values}"
                )
            columns.append(codes.to_numpy(dtype=np.float64))
        else:
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isnan(numbers).any():
                if feature.name not in medians:
                    raise TrainingError(f"feature {feature.name!r} has missing values to impute")
                numbers = np.where(np.isnan(numbers), medians[feature.name], numbers)
            columns.append(numbers)
    return np.column_stack(columns).astype(np.float64)


# ---------------------------------------------------------------- estimator


def estimator_class(name: str) -> type:
    """A scikit-learn classifier class by name (``LogisticRegression``) or dotted path."""
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        if not module_name.startswith("sklearn."):
            raise TrainingError(f"estimator {name!r}: only scikit-learn classifiers are served")
        candidates = (module_name,)
    else:
        class_name, candidates = name, ESTIMATOR_MODULES
    for module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if isinstance(cls, type):
            if not issubclass(cls, ClassifierMixin):
                raise TrainingError(f"estimator {name!r} is not a classifier")
            return cls
    raise TrainingError(
        f"unknown estimator {name!r}: give a scikit-learn classifier class name, e.g. "
        "RandomForestClassifier, LogisticRegression, GradientBoostingClassifier"
    )


def make_estimator(
    config: Config, name: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Any:
    """The configured estimator, or ``name`` with its preset params, plus ``overrides``.

    ``random_state`` is the split seed unless set, so a retrain reproduces the model.
    """
    name = name or config.estimator.default
    cls = estimator_class(name)
    params = dict(config.estimator.params.get(name, config.estimator.params.get(cls.__name__, {})))
    params.update(overrides or {})
    valid = cls().get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TrainingError(
            f"{cls.__name__} has no parameter(s) {unknown}; it takes {sorted(valid)}"
        )
    if "random_state" in valid and params.get("random_state") is None:
        params["random_state"] = config.seed
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"{cls.__name__} rejected its parameters: {error}") from None


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return repr(value)


# ---------------------------------------------------------------- metrics


def held_out_metrics(y_true: np.ndarray, probabilities: np.ndarray, n_train: int) -> dict[str, Any]:
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    result: dict[str, Any] = {
        "accuracy": skmetrics.accuracy_score(y_true, predicted),
        "balanced_accuracy": skmetrics.balanced_accuracy_score(y_true, predicted),
        "log_loss": skmetrics.log_loss(y_true, probabilities, labels=list(range(n_classes))),
        "macro_f1": skmetrics.f1_score(
            y_true, predicted, average="macro", labels=list(range(n_classes)), zero_division=0
        ),
    }
    if n_classes == 2:
        result["roc_auc"] = skmetrics.roc_auc_score(y_true, probabilities[:, 1])
    result = {key: round(float(value), 6) for key, value in result.items()}
    result["n_train"] = int(n_train)
    result["n_test"] = len(y_true)
    return result


# ---------------------------------------------------------------- training


@dataclass
class Trained:
    config: Config
    model: Any
    schema: Schema
    flags: list[str]
    metrics: dict[str, Any]
    x_test: np.ndarray
    proba_test: np.ndarray
    data_source: dict[str, Any]
    onnx_bytes: bytes | None
    onnx_info: dict[str, Any] | None
    onnx_note: str
    fit_seconds: float
    reference_distributions: dict[str, Any] = field(default_factory=dict)


def train(
    config: Config,
    raw: datasets.RawData,
    estimator: str | None = None,
    params: Mapping[str, Any] | None = None,
    log: Log | None = None,
) -> Trained:
    """Fit the configured model on ``raw`` (read by the caller: ``datasets.read_source``)."""
    log = log or (lambda message: None)
    model = make_estimator(config, estimator, params)
    log(f"read {len(raw.frame)} rows from {len(raw.files)} file(s)")
    prepared = prepare(config, raw.frame)
    log(f"{len(prepared.table)} rows after cleaning; dropped: {prepared.dropped or 'none'}")
    train_rows, test_rows = split_rows(config, prepared)
    schema = build_schema(config, prepared.table, train_rows)
    table = prepared.table
    x_train = encode(schema.features, table.iloc[train_rows], schema.medians)
    x_test = encode(schema.features, table.iloc[test_rows], schema.medians)
    y_train, y_test = prepared.y[train_rows], prepared.y[test_rows]
    flags = list(config.target.flags)

    fit_seconds = fit(model, x_train, y_train, len(flags))
    proba_test = model.predict_proba(x_test)
    metrics = held_out_metrics(y_test, proba_test, len(train_rows))
    log(
        f"fitted {type(model).__name__} in {fit_seconds:.2f} s; held-out accuracy "
        f"{metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}"
    )
    onnx_bytes, onnx_info, note = _export_onnx(model, x_test, proba_test)
    log(note)
    _check_servable(model, onnx_bytes is not None, log)
    return Trained(
        config=config,
        model=model,
        schema=schema,
        flags=flags,
        metrics=metrics,
        x_test=x_test,
        proba_test=proba_test,
        data_source=data_source_record(config, raw, prepared),
        onnx_bytes=onnx_bytes,
        onnx_info=onnx_info,
        onnx_note=note,
        fit_seconds=fit_seconds,
        reference_distributions=reference.from_training(schema.features, x_train),
    )


def split_rows(config: Config, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Row positions for training and for the held-out test, stratified by flag."""
    positions = np.arange(len(prepared.table))
    try:
        train_rows, test_rows = train_test_split(
            positions, test_size=config.test_size, random_state=config.seed, stratify=prepared.y
        )
    except ValueError as error:
        raise TrainingError(f"cannot split the data into train and test rows: {error}") from None
    return train_rows, test_rows


def fit(model: Any, x_train: np.ndarray, y_train: np.ndarray, n_flags: int) -> float:
    """Fit in place; the seconds it took. The model must give one probability per flag."""
    started = time.perf_counter()
    try:
        model.fit(x_train, y_train)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"{type(model).__name__} could not be fitted: {error}") from None
    fit_seconds = time.perf_counter() - started
    if not hasattr(model, "predict_proba"):
        raise TrainingError(f"{type(model).__name__} gives no probabilities (predict_proba)")
    if list(model.classes_) != list(range(n_flags)):
        raise TrainingError(
            f"the model learnt classes {list(model.classes_)}, not 0..{n_flags - 1}"
        )
    return fit_seconds


def data_source_record(config: Config, raw: datasets.RawData, prepared: Prepared) -> dict[str, Any]:
    """bundle.json's ``data_source``: where the rows came from and how many were used."""
    return {
        "description": config.data.description,
        "files": list(raw.files),
        "rows": len(prepared.table),
        "rows_read": prepared.rows_read,
        "rows_dropped": prepared.dropped,
        "license": config.data.license,
    }


def _export_onnx(
    model: Any, x_test: np.ndarray, proba_test: np.ndarray
) -> tuple[bytes | None, dict[str, Any] | None, str]:
    try:
        onnx_bytes = onnx_convert.to_onnx(model, x_test.shape[1])
        difference = onnx_convert.max_abs_difference(onnx_bytes, x_test, proba_test)
    except onnx_convert.OnnxConversionError as error:
        return None, None, f"no model.onnx: {error}"
    if not difference <= onnx_convert.TOLERANCE:
        return (
            None,
            None,
            f"no model.onnx: ONNX differs from scikit-learn by {difference:.3g} "
            f"(> {onnx_convert.TOLERANCE}) on the held-out rows",
        )
    session = onnx_convert.make_session(onnx_bytes)
    info = {
        "file": bundle.ONNX_FILE,
        "opset": onnx_convert.opset(onnx_bytes),
        "max_abs_diff": difference,
        "tolerance": onnx_convert.TOLERANCE,
        "rows_checked": len(x_test),
        "input_dtype": np.dtype(onnx_convert.input_dtype(session)).name,
    }
    note = f"model.onnx agrees with scikit-learn within {difference:.3g} on {len(x_test)} rows"
    return onnx_bytes, info, note


def _check_servable(model: Any, has_onnx: bool, log: Log) -> None:
    """The server unpickles only allow-listed classes: without model.onnx, all must be."""
    needed = safe_pickle.global_names(pickle.dumps(model, protocol=5))
    unserved = sorted(set(needed) - set(safe_pickle.MODEL_ALLOW_LIST))
    if not unserved:
        return
    if not has_onnx:
        raise TrainingError(
            f"{type(model).__name__} has no model.onnx and its pickle needs classes the "
            f"server never unpickles: {', '.join(unserved)}; choose an estimator skl2onnx "
            "converts, or RandomForestClassifier, LogisticRegression, GradientBoostingClassifier"
        )
    log(
        f"model.pkl needs classes the server never unpickles ({', '.join(unserved)}): "
        "this model serves only through model.onnx"
    )


# ---------------------------------------------------------------- bundle


def _versions() -> dict[str, str]:
    found = {}
    for module_name in ("skl2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            found[module_name] = importlib.import_module(module_name).__version__
        except ImportError:
            continue
    return found


def manifest_for(trained: Trained, version: str) -> dict[str, Any]:
    """Every ``bundle.json`` key except ``files`` (which needs the written files)."""
    config, model = trained.config, trained.model
    rows = trained.x_test[:SELF_CHECK_ROWS]
    config_bytes = config.path.read_bytes()
    return {
        "name": config.name,
        "version": version,
        "description": config.description,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python_version": platform.python_version(),
        "sklearn_version": sklearn.__version__,
        "estimator": type(model).__name__,
        "params": _json_safe(model.get_params()),
        "features": [bundle.feature_to_json(f) for f in trained.schema.features],
        "flags": trained.flags,
        "schema_digest": bundle.schema_digest(trained.schema.features, trained.flags),
        "metrics": trained.metrics,
        "data_source": trained.data_source,
        "preprocessing": {
            "encoding": "categorical label -> integer code in label order; numbers as float64",
            "imputed": trained.schema.imputed,
        },
        "training": {
            "config": config.path.name,
            "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
            "test_size": config.test_size,
            "seed": config.seed,
            "fit_seconds": round(trained.fit_seconds, 3),
            "library_versions": _versions(),
        },
        "self_check": {
            "rows": rows.tolist(),
            "probabilities": trained.proba_test[:SELF_CHECK_ROWS].tolist(),
        },
        "onnx": trained.onnx_info,
        reference.MANIFEST_KEY: trained.reference_distributions,
    }


def bundle_folder(out: Path, name: str, version: str, force: bool = False) -> Path:
    """``out/<name>/<version>``; an existing, non-empty one is refused unless ``force``."""
    target = out / name / version
    if target.exists() and any(target.iterdir()) and not force:
        raise BundleExistsError(
            f"{target} already exists; versions are immutable (choose another version, or "
            "--force to replace it)"
        )
    return target


def write_bundle(trained: Trained, version: str, out: Path, force: bool = False) -> Path:
    """Write ``out/<model>/<version>/`` atomically; an existing version needs ``force``."""
    target = bundle_folder(out, trained.config.name, version, force)
    lookup = bundle.lookup_from_features(trained.schema.features)
    n_features = getattr(trained.model, "n_features_in_", len(lookup))
    if n_features != len(lookup):
        raise TrainingError(f"lookup has {len(lookup)} features, the model {n_features}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=target.parent))
    try:
        with (staging / bundle.MODEL_FILE).open("wb") as stream:
            pickle.dump(trained.model, stream, protocol=5)
        with (staging / bundle.LOOKUP_FILE).open("wb") as stream:
            pickle.dump(lookup, stream, protocol=5)
        with (staging / bundle.FLAGS_FILE).open("wb") as stream:
            pickle.dump(list(trained.flags), stream, protocol=5)
        names = list(bundle.PICKLE_FILES)
        if trained.onnx_bytes is not None:
            (staging / bundle.ONNX_FILE).write_bytes(trained.onnx_bytes)
            names.append(bundle.ONNX_FILE)
        manifest = manifest_for(trained, version)
        # The exact classes the server may resolve when it has to unpickle the model.
        manifest["model_types"] = safe_pickle.global_names(
            (staging / bundle.MODEL_FILE).read_bytes()
        )
        manifest["files"] = bundle.describe_files(staging, names)
        bundle.write_manifest(staging, _ordered(manifest))
        bundle.verify_folder(staging)
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


_KEY_ORDER = (
    "name", "version", "description", "created_at", "python_version", "sklearn_version",
    "estimator", "model_types", "params", "features", "flags", "files", "schema_digest", "metrics",
    "data_source", "preprocessing", "training", "self_check", "onnx", reference.MANIFEST_KEY,
)  # fmt: skip


def _ordered(manifest: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: manifest[key] for key in _KEY_ORDER if key in manifest}
    ordered.update({k: v for k, v in manifest.items() if k not in ordered})
    return json.loads(json.dumps(ordered))
