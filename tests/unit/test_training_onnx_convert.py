"""ONNX conversion: probabilities as a tensor, dtype per estimator, clear refusals."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from batcomputer_bundle import onnx_convert
from batcomputer_bundle.onnx_convert import OnnxConversionError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(400, 4)) * [1.0, 10.0, 100.0, 1.0]
    labels = (rows[:, 0] + rows[:, 1] / 10 > 0).astype(int) + (rows[:, 2] > 60)
    return rows, labels


@pytest.mark.parametrize(
    ("estimator", "dtype"),
    [
        (RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0), np.float32),
        (LogisticRegression(max_iter=500), np.float64),
    ],
)
def test_conversion_agrees_with_scikit_learn(data, estimator, dtype):
    rows, labels = data
    model = estimator.fit(rows, labels)
    onnx_bytes = onnx_convert.to_onnx(model, rows.shape[1])
    session = onnx_convert.make_session(onnx_bytes)
    assert onnx_convert.input_dtype(session) is dtype
    probabilities = onnx_convert.run_probabilities(session, rows)
    assert probabilities.shape == (len(rows), 3)
    difference = onnx_convert.max_abs_difference(onnx_bytes, rows, model.predict_proba(rows))
    assert difference <= onnx_convert.TOLERANCE
    assert onnx_convert.opset(onnx_bytes) >= 9


def test_a_single_row_is_accepted(data):
    rows, labels = data
    model = LogisticRegression(max_iter=500).fit(rows, labels)
    session = onnx_convert.make_session(onnx_convert.to_onnx(model, 4))
    assert onnx_convert.run_probabilities(session, rows[0]).shape == (1, 3)


def test_unsupported_estimator_is_a_clear_error():
    class HomeMade:
        def predict_proba(self, rows):
            return rows

    with pytest.raises(OnnxConversionError, match="cannot convert HomeMade"):
        onnx_convert.to_onnx(HomeMade(), 3)


def test_estimator_without_probabilities_is_refused():
    with pytest.raises(OnnxConversionError, match="no predict_proba"):
        onnx_convert.to_onnx(object(), 3)


def test_shape_mismatch_is_an_error_not_a_number(data):
    rows, labels = data
    model = LogisticRegression(max_iter=500).fit(rows, labels)
    onnx_bytes = onnx_convert.to_onnx(model, 4)
    with pytest.raises(OnnxConversionError, match="shape"):
        onnx_convert.max_abs_difference(onnx_bytes, rows, np.zeros((len(rows), 2)))


def test_garbage_bytes_do_not_load():
    with pytest.raises(OnnxConversionError, match="cannot load"):
        onnx_convert.make_session(b"not an onnx model")


def test_conversion_is_reproducible(data):
    rows, labels = data
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(rows, labels)
    assert onnx_convert.to_onnx(model, 4) == onnx_convert.to_onnx(model, 4)
