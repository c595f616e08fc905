"""scikit-learn → ONNX conversion and its verification against scikit-learn.

Used at training time (the bundle's ``model.onnx``) and by the server's engine loader
(conversion at load when a bundle carries no verified ONNX file). Domain code: it knows
skl2onnx and onnxruntime, nothing of Flask, Azure or Prometheus.

Input dtype
-----------
Bundles encode every feature as one float64 column. The ONNX graph's input dtype is
chosen per estimator so that onnxruntime reproduces scikit-learn's own arithmetic:

* Tree models (decision trees, forests, extra trees, gradient boosting): scikit-learn
  itself casts ``X`` to float32 before walking a tree and stores float32 thresholds, so
  the graph takes ``tensor(float)``. Feeding it float32 is then bit-for-bit the same
  comparison scikit-learn makes; a float64 graph would compare against thresholds that
  scikit-learn never used and could differ on values lying between the two roundings.
* Everything else (linear models, naive Bayes, ...): scikit-learn computes in float64,
  so the graph takes ``tensor(double)`` whenever skl2onnx can build a double graph for
  it, and falls back to ``tensor(float)`` (≈1e-7 relative error) otherwise.

Callers never need to care: :func:`run_probabilities` casts the float64 rows to
whatever the session's input expects (see :func:`input_dtype`).

Probabilities come out as a plain ``(n, n_classes)`` tensor, not a list of dicts,
because conversion passes ``zipmap=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TOLERANCE = 1e-5
"""Largest absolute difference in any probability for which ONNX counts as equivalent."""

TARGET_OPSET = 17
"""The ONNX (default domain) opset requested from skl2onnx; stable in onnxruntime ≥ 1.14."""

INPUT_NAME = "input"
PROBABILITIES_OUTPUT = "probabilities"

_FLOAT32_ESTIMATORS = (
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
)


class OnnxConversionError(Exception):
    """skl2onnx cannot convert this estimator (or the result cannot run); the message says why."""


def _wants_float32(model: Any) -> bool:
    return type(model).__name__ in _FLOAT32_ESTIMATORS


def to_onnx(model: Any, n_features: int) -> bytes:
    """The fitted classifier as a serialized ONNX model with a probability tensor output.

    The graph has one input ``input`` of shape ``(None, n_features)`` and the outputs
    ``label`` and ``probabilities`` (shape ``(None, n_classes)``, float32).
    Raises :class:`OnnxConversionError` when skl2onnx does not support the estimator.
    """
    if not hasattr(model, "predict_proba"):
        raise OnnxConversionError(f"{type(model).__name__} has no predict_proba")
    if n_features < 1:
        raise OnnxConversionError(f"a model needs at least one feature, got {n_features}")
    attempts = ("float", "double") if _wants_float32(model) else ("double", "float")
    failures: list[str] = []
    for dtype in attempts:
        try:
            onnx_bytes = _convert(model, n_features, dtype)
            _session(onnx_bytes)  # a graph onnxruntime cannot load is no conversion at all
        except OnnxConversionError:
            raise
        except _Retry as error:
            failures.append(f"{dtype} input: {error}")
            continue
        except Exception as error:
            failures.append(
                f"{dtype} input: onnxruntime cannot load the result: {_first_line(error)}"
            )
            continue
        return onnx_bytes
    raise OnnxConversionError(
        f"skl2onnx cannot convert {type(model).__name__}: " + "; ".join(failures)
    )


def _convert(model: Any, n_features: int, dtype: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor_type = DoubleTensorType if dtype == "double" else FloatTensorType
    try:
        onnx_model = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, tensor_type([None, n_features]))],
            target_opset=TARGET_OPSET,
            options={id(model): {"zipmap": False}},
            final_types=None,
        )
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
        # skl2onnx reports an unknown estimator as MissingShapeCalculator (a
        # RuntimeError) and unsupported options as NotImplementedError/TypeError.
        raise _Retry(error) from error
    # Name the probability output predictably whatever skl2onnx called it.
    outputs = onnx_model.graph.output
    if len(outputs) != 2:
        raise _Retry(RuntimeError(f"expected outputs label and probabilities, got {len(outputs)}"))
    _rename_output(onnx_model, outputs[1].name, PROBABILITIES_OUTPUT)
    # skl2onnx names the graph with a random UUID; a fixed name makes the same fitted
    # model always serialize to the same bytes (reproducible bundle digests).
    onnx_model.graph.name = type(model).__name__
    return onnx_model.SerializeToString()


class _Retry(Exception):  # noqa: N818 - internal control flow, never escapes
    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {_first_line(error)}")


def _rename_output(onnx_model: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in onnx_model.graph.node:
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new
    for output in onnx_model.graph.output:
        if output.name == old:
            output.name = new


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 200 else line[:200] + "..."


def _session(onnx_bytes: bytes, threads: int = 1) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def make_session(onnx_bytes: bytes, threads: int = 1) -> Any:
    """An onnxruntime ``InferenceSession`` for the model (CPU, ``threads`` intra-op threads)."""
    try:
        return _session(onnx_bytes, threads)
    except Exception as error:
        raise OnnxConversionError(
            f"onnxruntime cannot load the model: {_first_line(error)}"
        ) from None


def input_dtype(session: Any) -> type[np.floating]:
    """The numpy dtype the session's input takes: float32 or float64."""
    kind = session.get_inputs()[0].type
    if kind == "tensor(double)":
        return np.float64
    if kind == "tensor(float)":
        return np.float32
    raise OnnxConversionError(f"unsupported ONNX input type {kind}")


def run_probabilities(session: Any, rows: Any) -> np.ndarray:
    """Class probabilities (float64, shape ``(n, n_classes)``) for encoded rows."""
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    inputs = {session.get_inputs()[0].name: matrix.astype(input_dtype(session), copy=False)}
    (probabilities,) = session.run([PROBABILITIES_OUTPUT], inputs)
    return np.asarray(probabilities, dtype=np.float64)


def opset(onnx_bytes: bytes) -> int:
    """The default-domain opset the serialized model declares."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise OnnxConversionError("the ONNX model declares no default-domain opset")


def max_abs_difference(
    onnx_bytes: bytes | Any,
    rows: Sequence[Sequence[float]] | np.ndarray,
    expected_probabilities: Sequence[Sequence[float]] | np.ndarray,
) -> float:
    """Largest absolute difference between onnxruntime's and the expected probabilities.

    ``onnx_bytes`` may also be a session from :func:`make_session`. A shape mismatch
    (other number of rows or classes) is an :class:`OnnxConversionError`, not a number.
    """
    session = onnx_bytes if hasattr(onnx_bytes, "run") else make_session(bytes(onnx_bytes))
    expected = np.asarray(expected_probabilities, dtype=np.float64)
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.size == 0:
        raise OnnxConversionError("no rows to compare on")
    try:
        actual = run_probabilities(session, matrix)
    except OnnxConversionError:
        raise
    except Exception as error:
        raise OnnxConversionError(f"onnxruntime failed on the rows: {_first_line(error)}") from None
    if actual.shape != expected.shape:
        raise OnnxConversionError(
            f"onnxruntime gives probabilities of shape {actual.shape}, expected {expected.shape}"
        )
    return float(np.max(np.abs(actual - expected)))
