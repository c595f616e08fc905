"""Inference engines and the choice between them.

scikit-learn's ``predict_proba`` is the reference. onnxruntime serves the same model
far faster, so it is preferred whenever its probabilities agree with the reference
within ``TOLERANCE`` on held-out rows: first a ``model.onnx`` shipped in the bundle
(then ``model.pkl`` is never unpickled), else a conversion made at load time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from batcomputer_bundle import onnx_convert

TOLERANCE = onnx_convert.TOLERANCE
SCIKIT_LEARN = "scikit-learn"
ONNXRUNTIME = "onnxruntime"

_log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str
    n_features: int
    n_classes: int

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(rows, n_classes)``, for a float64 matrix."""
        ...


class SklearnEngine:
    name = SCIKIT_LEARN

    def __init__(self, model: Any) -> None:
        # Imported here: a server on a verified model.onnx never needs scikit-learn.
        import sklearn

        if not hasattr(model, "predict_proba"):
            raise TypeError(f"{type(model).__name__} has no predict_proba")
        self._model = model
        self._config_context = sklearn.config_context
        self.n_features = int(getattr(model, "n_features_in_", -1))
        self.n_classes = len(getattr(model, "classes_", ()))

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        # Inputs are validated and finite before they get here; skipping the
        # finiteness scan saves time on every request.
        with self._config_context(assume_finite=True):
            return self._model.predict_proba(matrix)


class OnnxEngine:
    name = ONNXRUNTIME

    def __init__(self, onnx_bytes: bytes) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One request is one small matrix: thread pools only add hand-off latency,
        # and gunicorn's workers already use the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = onnxruntime.InferenceSession(
            onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._dtype = onnx_convert.input_dtype(self._session)
        self._outputs = [onnx_convert.PROBABILITIES_OUTPUT]
        width = model_input.shape[1] if len(model_input.shape) == 2 else None
        self.n_features = width if isinstance(width, int) else -1
        self.n_classes = self._output_width()

    def _output_width(self) -> int:
        for output in self._session.get_outputs():
            if output.name == onnx_convert.PROBABILITIES_OUTPUT:
                width = output.shape[-1] if output.shape else None
                return width if isinstance(width, int) else -1
        raise onnx_convert.OnnxConversionError(
            f"the ONNX model has no {onnx_convert.PROBABILITIES_OUTPUT!r} output"
        )

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        feed = {self._input_name: matrix.astype(self._dtype, copy=False)}
        return self._session.run(self._outputs, feed)[0]


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine
    reason: str
    model: Any | None
    """The unpickled estimator, or None when a verified ``model.onnx`` spared unpickling."""


def _agreement(engine: Engine, rows: np.ndarray, expected: np.ndarray) -> float:
    actual = np.asarray(engine.probabilities(rows), dtype=np.float64)
    if actual.shape != expected.shape:
        raise onnx_convert.OnnxConversionError(
            f"it gives probabilities of shape {actual.shape}, expected {expected.shape}"
        )
    return float(np.max(np.abs(actual - expected)))


def choose_engine(
    onnx_bytes: bytes | None,
    load_model: Callable[[], Any],
    check_rows: np.ndarray,
    check_probabilities: np.ndarray | None,
) -> EngineChoice:
    """The fastest engine whose probabilities agree with scikit-learn's on ``check_rows``.

    ``check_probabilities`` are scikit-learn's recorded outputs for ``check_rows`` (the
    bundle's ``self_check``); without them the reference is computed from the unpickled
    model, so a shipped ONNX file cannot be trusted blindly.
    """
    rejected = ""
    if onnx_bytes is not None and check_probabilities is not None:
        try:
            engine = OnnxEngine(onnx_bytes)
            difference = _agreement(engine, check_rows, check_probabilities)
        except Exception as error:
            rejected = f"model.onnx unusable ({_first_line(error)}); "
        else:
            if difference <= TOLERANCE:
                return EngineChoice(
                    engine,
                    f"model.onnx from the bundle agrees with scikit-learn within {TOLERANCE:g} "
                    f"on {len(check_rows)} held-out rows (max difference {difference:.2g}); "
                    "model.pkl was not unpickled",
                    None,
                )
            rejected = f"model.onnx differs from scikit-learn by {difference:.2g}; "
    elif onnx_bytes is not None:
        rejected = "model.onnx cannot be verified without self_check rows; "

    model = load_model()
    reference = SklearnEngine(model)
    expected = np.asarray(reference.probabilities(check_rows), dtype=np.float64)
    try:
        onnx_model = onnx_convert.to_onnx(model, reference.n_features)
        engine = OnnxEngine(onnx_model)
        difference = _agreement(engine, check_rows, expected)
    except Exception as error:
        reason = f"{rejected}conversion at load failed ({_first_line(error)})"
    else:
        if difference <= TOLERANCE:
            return EngineChoice(
                engine,
                f"{rejected}converted to ONNX at load; agrees with scikit-learn within "
                f"{TOLERANCE:g} on {len(check_rows)} rows (max difference {difference:.2g})",
                model,
            )
        reason = f"{rejected}ONNX converted at load differs from scikit-learn by {difference:.2g}"
    _log.info("serving with scikit-learn: %s", reason)
    return EngineChoice(reference, reason, model)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line[:200]
