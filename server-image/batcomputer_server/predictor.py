"""The predictor: a verified bundle folder → validated named inputs → flag probabilities.

It knows nothing of HTTP. Bad input raises ``InputError`` naming the field and what
it allows; a bundle that is tampered with or inconsistent raises ``BundleError`` at load.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from batcomputer_bundle import bundle, safe_pickle
from batcomputer_bundle.bundle import BundleError, CategoricalFeature, Feature, NumericFeature
from batcomputer_server import engines

Allowed = list[str] | dict[str, float | None] | None

_NUMBER_TYPES = (int, float)
_NUMBER_TYPE_SET = frozenset(_NUMBER_TYPES)
# orjson parses integers up to 2**64 - 1 exactly; msgspec bounds on integers must fit an int64.
_INT64_MINIMUM, _INT64_MAXIMUM = -(2**63), 2**63 - 1


class InputError(ValueError):
    """One input is missing, unknown, of the wrong type or outside what the model allows."""

    def __init__(
        self, field: str | None, message: str, allowed: Allowed, row: int | None = None
    ) -> None:
        super().__init__(message if row is None else f"row {row}: {message}")
        self.field = field
        self.allowed = allowed
        self.row = row


@dataclass(frozen=True)
class _Column:
    """A feature prepared for fast encoding."""

    name: str
    index: int
    codes: Mapping[str, int] | None
    # The same codes as floats: a list of floats fills a float64 column fastest.
    float_codes: Mapping[str, float] | None
    integer: bool
    minimum: float
    maximum: float
    getter: Callable[[Mapping[str, Any]], Any]

    @property
    def allowed(self) -> Allowed:
        if self.codes is not None:
            return list(self.codes)
        return {
            "minimum": None if math.isinf(self.minimum) else self.minimum,
            "maximum": None if math.isinf(self.maximum) else self.maximum,
        }


def _column(index: int, feature: Feature) -> _Column:
    getter = operator.itemgetter(feature.name)
    if isinstance(feature, CategoricalFeature):
        codes = {label: feature.codes[label] for label in feature.values}
        float_codes = {label: float(code) for label, code in codes.items()}
        return _Column(feature.name, index, codes, float_codes, False, -math.inf, math.inf, getter)
    return _Column(
        feature.name,
        index,
        None,
        None,
        feature.type == "integer",
        -math.inf if feature.minimum is None else feature.minimum,
        math.inf if feature.maximum is None else feature.maximum,
        getter,
    )


def _row_field_type(column: _Column) -> Any:
    """The msgspec type that accepts exactly the JSON values ``encode_many`` accepts
    for this column (it may refuse more: those rows go the slow way)."""
    if column.codes is not None:
        return Literal[tuple(column.codes)]
    bounds = {"ge": column.minimum, "le": column.maximum}
    fraction = msgspec.Meta(
        **{key: bound for key, bound in bounds.items() if not math.isinf(bound)},
        **({"multiple_of": 1} if column.integer else {}),
    )
    return Annotated[int, _whole_number_bounds(column)] | Annotated[float, fraction]


def _whole_number_bounds(column: _Column) -> msgspec.Meta:
    # A JSON integer stays a Python int, as orjson leaves it, and is compared with the
    # bounds exactly: for an integer n, n >= 0.42 is n >= 1. msgspec bounds an int only
    # within an int64; integers beyond go the slow way.
    low = _INT64_MINIMUM if math.isinf(column.minimum) else math.ceil(column.minimum)
    high = _INT64_MAXIMUM if math.isinf(column.maximum) else math.floor(column.maximum)
    low, high = max(low, _INT64_MINIMUM), min(high, _INT64_MAXIMUM)
    if low > high:  # no int64 in range: every integer goes the slow way
        low, high = _INT64_MAXIMUM, _INT64_MINIMUM
    return msgspec.Meta(ge=low, le=high)


class _BatchDecoder:
    """A JSON array of valid input objects → its rows and the encoded matrix, in one go.

    msgspec parses and validates the body into one ``Struct`` per row, without a dict or
    a Python-level check per value; the values then reach the float64 matrix row-major
    through one ``struct.pack_into``. Anything it refuses (malformed JSON, a wrong type,
    a missing or unknown input, a value out of range, too many rows) decodes to None, so
    that ``encode_many`` names the mistake as it always has.
    """

    def __init__(self, columns: Sequence[_Column], max_rows: int) -> None:
        # Attribute names of their own: a feature may be called anything, "__init__" too.
        fields = [(f"input_{c.index}", _row_field_type(c)) for c in columns]
        row_type = msgspec.defstruct(
            "InputRow",
            fields,
            forbid_unknown_fields=True,
            rename={f"input_{c.index}": c.name for c in columns},
            gc=False,  # rows hold only strings and numbers, never a cycle
        )
        size = msgspec.Meta(min_length=1, max_length=max_rows)
        self._decoder = msgspec.json.Decoder(Annotated[list[row_type], size])
        self._names = [c.name for c in columns]
        self._width = len(columns)
        self._categorical = [(c.index, c.float_codes) for c in columns if c.float_codes is not None]

    def decode(self, body: bytes) -> DecodedBatch | None:
        # One input object goes the orjson way at once: msgspec's refusal of it would
        # cost more than that check, and a one-row request gains nothing from msgspec.
        if not body.startswith(b"["):
            return None
        try:
            rows = self._decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        width = self._width
        values = list(chain.from_iterable(map(msgspec.structs.astuple, rows)))
        for index, float_codes in self._categorical:
            values[index::width] = map(float_codes.__getitem__, values[index::width])
        matrix = np.empty((len(rows), width), dtype=np.float64)
        struct.pack_into(f"{len(values)}d", matrix, 0, *values)
        return DecodedBatch(rows, self._names, matrix)


@dataclass(frozen=True)
class DecodedBatch:
    """A batch that ``_BatchDecoder`` found valid: its rows and their encoded matrix."""

    rows: list[Any]
    names: list[str]
    matrix: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def objects(self, indexes: Iterable[int]) -> list[dict[str, Any]]:
        """These rows as the input objects orjson gives for them."""
        rows, names = self.rows, self.names
        return [dict(zip(names, msgspec.structs.astuple(rows[i]), strict=True)) for i in indexes]


def _numeric_problem(column: _Column, value: Any) -> str | None:
    if type(value) not in _NUMBER_TYPES:
        kind = "an integer" if column.integer else "a number"
        return f"{column.name!r} must be {kind}, got {_json_type(value)}"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return f"{column.name!r} is outside the range the model was trained on"
    if not finite:
        return f"{column.name!r} must be a finite number"
    if column.integer and not float(value).is_integer():
        return f"{column.name!r} must be a whole number"
    if not column.minimum <= value <= column.maximum:
        return f"{column.name!r} is outside the range the model was trained on"
    return None


def _clipped(probabilities: np.ndarray) -> np.ndarray:
    # float32 engines can land a hair outside [0, 1]; the API promises probabilities.
    # The two ufuncs cost half of np.clip's wrapper on a one-row answer; NaN stays NaN.
    return np.minimum(np.maximum(probabilities, 0.0), 1.0)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class Predictor:
    """A loaded, verified bundle ready to score."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        features: Sequence[Feature],
        flags: Sequence[str],
        choice: engines.EngineChoice,
    ) -> None:
        self.manifest = manifest
        self.features = tuple(features)
        self.flags = tuple(flags)
        self.engine = choice.engine
        self.engine_reason = choice.reason
        self._columns = tuple(_column(i, f) for i, f in enumerate(self.features))
        self._names = frozenset(f.name for f in self.features)
        self._feature_names = [f.name for f in self.features]
        self._minimums = np.array([c.minimum for c in self._columns], dtype=np.float64)
        self._maximums = np.array([c.maximum for c in self._columns], dtype=np.float64)
        self._integer_indexes = [c.index for c in self._columns if c.integer]

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(cls, folder: Path | str, pinned: Mapping[str, str] | None = None) -> Predictor:
        """Verify, unpickle (restricted) and cross-check a bundle folder."""
        folder = Path(folder)
        manifest = bundle.verify_folder(folder, pinned)
        lookup = _unpickle(folder / bundle.LOOKUP_FILE, safe_pickle.load_data)
        flags = _unpickle(folder / bundle.FLAGS_FILE, safe_pickle.load_data)
        if not isinstance(flags, list | tuple) or not all(isinstance(f, str) for f in flags):
            raise BundleError("flags.pkl must hold a list of class labels (strings)")
        if list(flags) != list(manifest["flags"]):
            raise BundleError("flags.pkl does not match the flags listed in bundle.json")

        manifest_names = [entry["name"] for entry in manifest["features"]]
        features = _features(lookup, manifest_names)

        def load_model() -> Any:
            model_types = manifest.get("model_types")
            model = _unpickle(
                folder / bundle.MODEL_FILE, lambda data: safe_pickle.load_model(data, model_types)
            )
            _check_shapes(engines.SklearnEngine(model), features, flags)
            return model

        check_rows, check_probabilities = _check_data(manifest, features)
        onnx_bytes = _verified_onnx_bytes(folder, manifest)
        try:
            choice = engines.choose_engine(onnx_bytes, load_model, check_rows, check_probabilities)
        except BundleError:
            raise
        except Exception as error:
            raise BundleError(f"the model cannot score its own check rows: {error}") from None
        if choice.model is not None:
            _check_classes(choice.model, flags)
        _check_shapes(choice.engine, features, flags)
        digest = bundle.schema_digest(features, flags)
        if digest != manifest["schema_digest"]:
            raise BundleError(
                "lookup.pkl and flags.pkl describe another API than bundle.json's schema_digest"
            )
        predictor = cls(manifest, features, flags, choice)
        predictor.self_check()
        return predictor

    # -- scoring -------------------------------------------------------------------

    def encode_one(self, inputs: Any) -> np.ndarray:
        """One object of named inputs → a ``(1, n_features)`` float64 matrix."""
        if not isinstance(inputs, dict):
            raise InputError(None, "expected a JSON object of named inputs", self._feature_names)
        if inputs.keys() != self._names:
            self._raise_key_error(inputs, None)
        row = [0.0] * len(self._columns)
        for column in self._columns:
            value = inputs[column.name]
            if column.codes is not None:
                code = column.codes.get(value) if type(value) is str else None
                if code is None:
                    raise InputError(column.name, self._categorical_message(column), column.allowed)
                row[column.index] = code
            else:
                problem = _numeric_problem(column, value)
                if problem is not None:
                    raise InputError(column.name, problem, column.allowed)
                row[column.index] = value
        return np.array([row], dtype=np.float64)

    def encode_many(self, rows: Any) -> np.ndarray:
        """A list of input objects → a ``(len(rows), n_features)`` float64 matrix, by column.

        A valid batch is encoded column by column with ``map`` and checked with NumPy in
        one pass over the whole matrix; only a batch with a mistake in it is gone through
        again, column by column in feature order, to name the first bad row.
        """
        if not isinstance(rows, list) or not rows:
            raise InputError(None, "expected a non-empty array of input objects", None)
        matrix = self._encode_valid_batch(rows)
        return self._encode_checked(rows) if matrix is None else matrix

    def _encode_valid_batch(self, rows: list[Any]) -> np.ndarray | None:
        """The encoded batch, or None when anything in it is wrong (never raises)."""
        try:
            # Every row has exactly as many keys as there are features (a number or null
            # has no length) ...
            if set(map(len, rows)) != {len(self._columns)}:
                return None
        except TypeError:
            return None
        matrix = np.empty((len(rows), len(self._columns)), dtype=np.float64)
        for column in self._columns:
            try:
                # ... and each row is an object holding every feature (itemgetter raises
                # TypeError for a list or a string, KeyError for a missing name), so each
                # row's keys are exactly the feature names.
                if column.float_codes is not None:
                    # Labels are all strings, so no number, boolean or null can match one;
                    # an unknown label is None, which NumPy stores as NaN.
                    values = list(map(column.float_codes.get, map(column.getter, rows)))
                else:
                    values = list(map(column.getter, rows))
                    if not set(map(type, values)) <= _NUMBER_TYPE_SET:  # booleans, strings
                        return None
                matrix[:, column.index] = values
            except (KeyError, TypeError, OverflowError):  # OverflowError: beyond any float
                return None
        integers = matrix[:, self._integer_indexes]
        valid = (
            np.isfinite(matrix).all()
            and (matrix >= self._minimums).all()
            and (matrix <= self._maximums).all()
            and (integers == np.floor(integers)).all()
        )
        return matrix if valid else None

    def _encode_checked(self, rows: list[Any]) -> np.ndarray:
        """The batch encoded column by column, raising ``InputError`` for the first bad row
        (any wrong key set first, then each column in feature order)."""
        if set(map(type, rows)) != {dict} or set(map(len, rows)) != {len(self._columns)}:
            self._raise_row_error(rows)
        matrix = np.empty((len(rows), len(self._columns)), dtype=np.float64)
        for column in self._columns:
            try:
                values = list(map(column.getter, rows))
            except KeyError:
                self._raise_row_error(rows)
            if column.codes is not None:
                matrix[:, column.index] = self._encode_categorical_column(column, values)
            else:
                matrix[:, column.index] = self._numeric_column(column, values)
        return matrix

    def _raise_row_error(self, rows: list[Any]) -> None:
        for index, inputs in enumerate(rows):
            if type(inputs) is not dict:
                raise InputError(None, "expected an object of named inputs", None, row=index)
            if inputs.keys() != self._names:
                self._raise_key_error(inputs, index)

    def _encode_categorical_column(self, column: _Column, values: list[Any]) -> list[int]:
        codes = column.codes
        assert codes is not None
        try:
            # Labels are all strings, so no number, boolean or null can match one.
            encoded = list(map(codes.get, values))
        except TypeError:  # an array or object is unhashable
            encoded = [codes.get(v) if type(v) is str else None for v in values]
        if None in encoded:
            bad = encoded.index(None)
            message = self._categorical_message(column)
            raise InputError(column.name, message, column.allowed, row=bad)
        return encoded  # type: ignore[return-value]

    def _numeric_column(self, column: _Column, values: list[Any]) -> np.ndarray:
        if set(map(type, values)) <= _NUMBER_TYPE_SET:
            try:
                array = np.array(values, dtype=np.float64)
            except OverflowError:
                array = None
            if array is not None:
                ok = np.isfinite(array) & (array >= column.minimum) & (array <= column.maximum)
                if column.integer:
                    ok &= array == np.floor(array)
                if ok.all():
                    return array
        bad = next(i for i, v in enumerate(values) if _numeric_problem(column, v))
        problem = _numeric_problem(column, values[bad]) or f"{column.name!r} is not valid"
        raise InputError(column.name, problem, column.allowed, row=bad)

    def batch_decoder(self, max_rows: int) -> Callable[[bytes], DecodedBatch | None]:
        """A JSON body → the batch of at most ``max_rows`` valid input objects it holds,
        or None for anything else (``encode_many`` on the parsed body then says why)."""
        return _BatchDecoder(self._columns, max_rows).decode

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """An encoded batch → its probabilities, as ``probabilities_many`` gives them."""
        return np.ascontiguousarray(_clipped(self.engine.probabilities(matrix)), dtype=np.float64)

    def predict_one(self, inputs: Any) -> dict[str, float]:
        probabilities = self.engine.probabilities(self.encode_one(inputs))
        return dict(zip(self.flags, _clipped(probabilities)[0].tolist(), strict=True))

    def probabilities_many(self, rows: Any) -> np.ndarray:
        """A list of input objects → a C-ordered float64 ``(len(rows), len(flags))`` matrix
        of probabilities, in ``flags`` order."""
        return self.probabilities(self.encode_many(rows))

    def predict_many(self, rows: Any) -> list[dict[str, float]]:
        return self.labelled(self.probabilities_many(rows))

    def labelled(self, probabilities: np.ndarray) -> list[dict[str, float]]:
        """``probabilities_many``'s matrix as one ``{flag: probability}`` object per row."""
        return list(map(dict, map(zip, repeat(self.flags), probabilities.tolist())))

    def _raise_key_error(self, inputs: Mapping[str, Any], row: int | None) -> None:
        for column in self._columns:
            if column.name not in inputs:
                raise InputError(
                    column.name, f"missing input {column.name!r}", column.allowed, row=row
                )
        unknown = sorted(str(name) for name in inputs if name not in self._names)
        raise InputError(
            unknown[0],
            f"unknown input {unknown[0]!r}; the model takes only the listed inputs",
            self._feature_names,
            row=row,
        )

    @staticmethod
    def _categorical_message(column: _Column) -> str:
        return f"{column.name!r} must be one of its allowed values"

    # -- description ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def schema_digest(self) -> str:
        return str(self.manifest["schema_digest"])

    def params(self) -> list[dict[str, Any]]:
        """Every input with its type and allowed values, in model order."""
        return [bundle.feature_to_json(feature) for feature in self.features]

    def example(self) -> dict[str, Any]:
        """A valid input object made of real allowed values (middle of each range)."""
        example: dict[str, Any] = {}
        for column in self._columns:
            if column.codes is not None:
                example[column.name] = next(iter(column.codes))
                continue
            low = column.minimum if math.isfinite(column.minimum) else 0.0
            high = column.maximum if math.isfinite(column.maximum) else low
            middle = (low + high) / 2
            value = math.floor(middle) if column.integer else round(middle, 2)
            example[column.name] = value if low <= value <= high else middle
        return example

    def info(self) -> dict[str, Any]:
        """What /api/info reports about the model (the server adds its own state)."""
        manifest = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "created_at": manifest.get("created_at"),
            "estimator": manifest.get("estimator"),
            "schema_digest": self.schema_digest,
            "bundle_digests": {name: entry["sha256"] for name, entry in manifest["files"].items()},
            "engine": self.engine.name,
            "engine_reason": self.engine_reason,
            "onnx_tolerance": engines.TOLERANCE,
            "metrics": manifest.get("metrics"),
            "data_source": manifest.get("data_source"),
            "trained_with": {
                "python": manifest.get("python_version"),
                "scikit-learn": manifest.get("sklearn_version"),
            },
            "flags": list(self.flags),
            "features": self.params(),
        }

    def self_check(self) -> None:
        """Score the bundle's held-out rows (or an example) and compare; BundleError if off."""
        rows, expected = _check_data(self.manifest, self.features)
        actual = np.asarray(self.engine.probabilities(rows), dtype=np.float64)
        if actual.shape != (len(rows), len(self.flags)):
            raise BundleError(f"self-check gave probabilities of shape {actual.shape}")
        if expected is not None and float(np.max(np.abs(actual - expected))) > engines.TOLERANCE:
            raise BundleError(
                "self-check failed: the model does not reproduce bundle.json's "
                f"self_check probabilities within {engines.TOLERANCE:g}"
            )
        sums = self.predict_one(self.example()).values()
        if not math.isclose(sum(sums), 1.0, abs_tol=1e-4):
            raise BundleError("self-check failed: probabilities for an example do not sum to 1")


def _unpickle(path: Path, reader: Callable[[bytes], Any]) -> Any:
    try:
        return reader(path.read_bytes())
    except safe_pickle.UnsafePickleError as error:
        raise BundleError(f"{path.name}: {error}") from None
    except Exception as error:
        raise BundleError(f"{path.name} cannot be unpickled: {error}") from None


def _features(lookup: Any, order: Sequence[str]) -> tuple[Feature, ...]:
    features = bundle.features_from_lookup(lookup)
    seed_style = not any(isinstance(feature, NumericFeature) for feature in features)
    if seed_style and len(features) < len(order):
        return bundle.features_from_lookup(lookup, feature_order=order)
    return features


def _check_data(
    manifest: Mapping[str, Any], features: Sequence[Feature]
) -> tuple[np.ndarray, np.ndarray | None]:
    check = manifest.get("self_check") or {}
    rows, probabilities = check.get("rows"), check.get("probabilities")
    if rows:
        try:
            matrix = np.asarray(rows, dtype=np.float64)
            expected = np.asarray(probabilities, dtype=np.float64) if probabilities else None
        except (TypeError, ValueError):
            raise BundleError("bundle.json self_check holds non-numeric rows") from None
        if matrix.ndim != 2:
            raise BundleError("bundle.json self_check rows must be a list of rows")
        if expected is not None and expected.shape[0] != matrix.shape[0]:
            raise BundleError("bundle.json self_check has unequal rows and probabilities")
        return matrix, expected
    return _synthetic_rows(features), None


def _synthetic_rows(features: Sequence[Feature]) -> np.ndarray:
    """Rows spanning every code and each numeric range, for bundles without self_check."""
    columns = []
    for feature in features:
        if isinstance(feature, CategoricalFeature):
            columns.append(sorted(feature.codes.values()))
        else:
            low = 0.0 if feature.minimum is None else feature.minimum
            high = low + 1.0 if feature.maximum is None else feature.maximum
            columns.append(list(np.linspace(low, high, 5)))
    length = max(len(values) for values in columns)
    return np.array(
        [[values[i % len(values)] for values in columns] for i in range(length)], dtype=np.float64
    )


def _verified_onnx_bytes(folder: Path, manifest: Mapping[str, Any]) -> bytes | None:
    onnx = manifest.get("onnx")
    if not onnx or onnx.get("file") not in manifest["files"]:
        return None
    # verify_folder has already checked this file's sha256 against the manifest.
    return (folder / onnx["file"]).read_bytes()


def _check_classes(model: Any, flags: Sequence[str]) -> None:
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise BundleError(f"model.pkl ({type(model).__name__}) has no classes_")
    if len(classes) != len(flags):
        raise BundleError(
            f"flags.pkl names {len(flags)} flags but the model has {len(classes)} classes"
        )
    if [int(c) if isinstance(c, int | np.integer) else c for c in classes] != list(
        range(len(flags))
    ):
        raise BundleError("the model's classes_ must be 0..n-1 so flags.pkl can name them")


def _check_shapes(
    engine: engines.Engine, features: Sequence[Feature], flags: Sequence[str]
) -> None:
    if engine.n_features not in (-1, len(features)):
        raise BundleError(
            f"lookup.pkl describes {len(features)} features but the model takes {engine.n_features}"
        )
    if engine.n_classes not in (-1, len(flags)):
        raise BundleError(
            f"flags.pkl names {len(flags)} flags but the model gives {engine.n_classes} classes"
        )
