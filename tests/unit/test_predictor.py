"""The predictor: verified loading, engine choice, input validation and scoring."""

import json
import os
import pickle

import numpy as np
import pytest
from _server_bundles import FLAGS, LOOKUP, fitted, refresh_digests, training_data, write_bundle
from sklearn.ensemble import HistGradientBoostingClassifier

from batcomputer_bundle import bundle, onnx_convert
from batcomputer_bundle.bundle import BundleError
from batcomputer_server import scoring
from batcomputer_server.predictor import InputError, Predictor

PASSENGER = {"sex": "female", "pclass": "1st", "age": 29.0, "sibsp": 1}


@pytest.fixture(scope="module")
def forest_folder(tmp_path_factory):
    return write_bundle(tmp_path_factory.mktemp("forest") / "titanic" / "1.0.0")


@pytest.fixture(scope="module")
def predictor(forest_folder):
    return Predictor.load(forest_folder)


@pytest.fixture
def folder(tmp_path):
    return write_bundle(tmp_path / "titanic" / "1.0.0")


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -- engine choice -----------------------------------------------------------------


def test_a_verified_model_onnx_is_served_without_unpickling_model_pkl(tmp_path):
    folder = write_bundle(tmp_path / "b")
    marker = tmp_path / "pwned"
    (folder / bundle.MODEL_FILE).write_bytes(pickle.dumps(_Hostile(marker)))
    refresh_digests(folder)
    predictor = Predictor.load(folder)
    assert predictor.engine.name == "onnxruntime"
    assert "model.pkl was not unpickled" in predictor.engine_reason
    assert not marker.exists()


def test_without_model_onnx_the_model_is_converted_at_load(tmp_path):
    predictor = Predictor.load(write_bundle(tmp_path / "b", with_onnx=False))
    assert predictor.engine.name == "onnxruntime"
    assert "converted to ONNX at load" in predictor.engine_reason


def test_a_model_onnx_that_disagrees_is_not_trusted(tmp_path):
    folder = write_bundle(tmp_path / "b")
    other = onnx_convert.to_onnx(fitted("LogisticRegression"), 4)
    (folder / bundle.ONNX_FILE).write_bytes(other)
    refresh_digests(folder)
    predictor = Predictor.load(folder)
    assert "model.onnx differs from scikit-learn" in predictor.engine_reason
    assert "converted to ONNX at load" in predictor.engine_reason
    matrix, _ = training_data(rows=20, seed=5)
    expected = fitted().predict_proba(matrix)
    np.testing.assert_allclose(predictor.engine.probabilities(matrix), expected, atol=1e-5)


def test_a_model_onnx_cannot_convert_falls_back_to_scikit_learn(tmp_path):
    matrix, target = training_data()
    model = HistGradientBoostingClassifier(max_iter=20).fit(matrix, target)
    folder = write_bundle(tmp_path / "b", model=model, with_onnx=False)
    predictor = Predictor.load(folder)
    assert predictor.engine.name == "scikit-learn"
    assert "conversion at load failed" in predictor.engine_reason
    single = predictor.predict_one(PASSENGER)
    expected = model.predict_proba([[0, 0, 29.0, 1]])[0]
    assert single == pytest.approx(dict(zip(FLAGS, expected, strict=True)))


@pytest.mark.parametrize("estimator", ["RandomForestClassifier", "LogisticRegression"])
def test_onnx_and_scikit_learn_give_the_same_answers(tmp_path, estimator):
    model = fitted(estimator)
    predictor = Predictor.load(write_bundle(tmp_path / "b", model=model))
    matrix, _ = training_data(rows=200, seed=9)
    np.testing.assert_allclose(
        predictor.engine.probabilities(matrix), model.predict_proba(matrix), atol=1e-5
    )


# -- bundles that must not load ------------------------------------------------------


def test_a_tampered_pickle_is_refused_before_unpickling(folder):
    (folder / bundle.LOOKUP_FILE).write_bytes(pickle.dumps({"sex": {"x": 0}}))
    with pytest.raises(BundleError, match=r"sha256 mismatch for lookup\.pkl"):
        Predictor.load(folder)


def test_a_hostile_lookup_is_refused_by_name(folder, tmp_path):
    marker = tmp_path / "pwned"
    (folder / bundle.LOOKUP_FILE).write_bytes(pickle.dumps({"sex": _Hostile(marker)}))
    refresh_digests(folder)
    with pytest.raises(BundleError, match=r"lookup.pkl: refused to load posix\.system"):
        Predictor.load(folder)
    assert not marker.exists()


def test_a_hostile_model_pickle_without_onnx_is_refused_by_name(tmp_path):
    folder = write_bundle(tmp_path / "b", with_onnx=False)
    marker = tmp_path / "pwned"
    (folder / bundle.MODEL_FILE).write_bytes(pickle.dumps(_Hostile(marker)))
    refresh_digests(folder)
    with pytest.raises(BundleError, match=r"model.pkl: refused to load posix\.system"):
        Predictor.load(folder)
    assert not marker.exists()


def test_a_lookup_with_the_wrong_feature_count_is_refused(tmp_path):
    short = {name: entry for name, entry in LOOKUP.items() if name != "sibsp"}
    folder = write_bundle(tmp_path / "b", lookup=short, with_onnx=False, with_self_check=False)
    with pytest.raises(BundleError, match="3 features but the model takes 4"):
        Predictor.load(folder)


def test_flags_that_do_not_match_the_classes_are_refused(tmp_path):
    folder = write_bundle(tmp_path / "b", flags=["died", "survived", "missing"], with_onnx=False)
    with pytest.raises(BundleError, match="3 flags but the model gives 2 classes"):
        Predictor.load(folder)


def test_a_self_check_the_model_does_not_reproduce_is_refused(folder):
    manifest = bundle.read_manifest(folder)
    manifest["self_check"]["probabilities"] = [
        [1 - p[0], 1 - p[1]] for p in manifest["self_check"]["probabilities"]
    ]
    manifest.pop("format")
    bundle.write_manifest(folder, manifest)
    with pytest.raises(BundleError, match="self_check probabilities"):
        Predictor.load(folder)


def test_a_schema_digest_that_does_not_match_the_pickles_is_refused(folder):
    manifest = json.loads((folder / bundle.MANIFEST_FILE).read_text())
    manifest["schema_digest"] = "sha256:" + "0" * 64
    (folder / bundle.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_digest"):
        Predictor.load(folder)


def test_a_seed_style_lookup_takes_numeric_inputs_from_the_manifest_order(tmp_path):
    seed = {"sex": LOOKUP["sex"], "pclass": LOOKUP["pclass"]}
    order = [
        {"name": "sex", "type": "categorical", "values": ["female", "male"]},
        {"name": "pclass", "type": "categorical", "values": ["1st", "2nd", "3rd"]},
        {"name": "age", "type": "number", "minimum": None, "maximum": None},
        {"name": "sibsp", "type": "number", "minimum": None, "maximum": None},
    ]
    predictor = Predictor.load(write_bundle(tmp_path / "b", lookup=seed, manifest_features=order))
    assert [f["name"] for f in predictor.params()] == ["sex", "pclass", "age", "sibsp"]
    assert sum(predictor.predict_one({**PASSENGER, "age": 200.5}).values()) == pytest.approx(1)


# -- scoring -------------------------------------------------------------------------


def test_a_single_passenger_gets_one_probability_per_flag(predictor):
    result = predictor.predict_one(PASSENGER)
    assert list(result) == FLAGS
    assert sum(result.values()) == pytest.approx(1.0)
    assert all(isinstance(p, float) for p in result.values())


def test_a_batch_scores_each_row_like_a_single_request(predictor):
    rows = [
        PASSENGER,
        {"sex": "male", "pclass": "3rd", "age": 40, "sibsp": 0},
        {"sex": "male", "pclass": "2nd", "age": 0.42, "sibsp": 8.0},
    ]
    batch = predictor.predict_many(rows)
    assert batch == [pytest.approx(predictor.predict_one(row)) for row in rows]


def test_the_example_is_valid_and_made_of_allowed_values(predictor):
    example = predictor.example()
    assert example["sex"] in LOOKUP["sex"]
    assert 0.42 <= example["age"] <= 80.0
    assert isinstance(example["sibsp"], int)
    predictor.predict_one(example)


def test_params_list_every_input_with_type_and_allowed_values(predictor):
    assert predictor.params() == [
        {"name": "sex", "type": "categorical", "values": ["female", "male"]},
        {"name": "pclass", "type": "categorical", "values": ["1st", "2nd", "3rd"]},
        {"name": "age", "type": "number", "minimum": 0.42, "maximum": 80.0},
        {"name": "sibsp", "type": "integer", "minimum": 0.0, "maximum": 8.0},
    ]


# -- bad input -----------------------------------------------------------------------

RANGE_AGE = {"minimum": 0.42, "maximum": 80.0}
RANGE_SIBSP = {"minimum": 0.0, "maximum": 8.0}


@pytest.mark.parametrize(
    ("change", "field", "message", "allowed"),
    [
        ({"sex": None}, "sex", "missing input 'sex'", ["female", "male"]),
        ({"colour": "red"}, "colour", "unknown input 'colour'", ["sex", "pclass", "age", "sibsp"]),
        ({"sex": "unknown"}, "sex", "one of its allowed values", ["female", "male"]),
        ({"pclass": 1}, "pclass", "one of its allowed values", ["1st", "2nd", "3rd"]),
        ({"pclass": ["1st"]}, "pclass", "one of its allowed values", ["1st", "2nd", "3rd"]),
        ({"age": "29"}, "age", "must be a number, got a string", RANGE_AGE),
        ({"age": True}, "age", "must be a number, got a boolean", RANGE_AGE),
        ({"age": float("nan")}, "age", "finite", RANGE_AGE),
        ({"age": 80.5}, "age", "outside the range", RANGE_AGE),
        ({"age": -(10**400)}, "age", "outside the range", RANGE_AGE),
        ({"sibsp": 1.5}, "sibsp", "whole number", RANGE_SIBSP),
        ({"sibsp": 9}, "sibsp", "outside the range", RANGE_SIBSP),
        ({"sibsp": None}, "sibsp", "missing input", RANGE_SIBSP),
    ],
)
def test_each_bad_input_names_the_field_and_what_it_allows(
    predictor, change, field, message, allowed
):
    inputs = {**PASSENGER, **change}
    if change.get(field, "") is None:
        del inputs[field]
    for score in (predictor.predict_one, lambda row: predictor.predict_many([PASSENGER, row])):
        with pytest.raises(InputError, match=message) as error:
            score(inputs)
        assert error.value.field == field
        assert error.value.allowed == allowed
    assert error.value.row == 1


@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("rows", [1, 2, 1000])
def test_a_batch_answer_is_written_as_its_rows_as_objects_would_be(rows, width):
    probabilities = np.random.default_rng(rows * width).random((rows, width))
    probabilities[0, 0] = 1e-7  # exponent notation
    probabilities[-1, -1] = 1.0
    flags = [f'flag "{number}" ü' for number in range(width)]  # escaped and non-ASCII keys
    answer = scoring.labelled_rows(flags, probabilities)
    rows_as_objects = [dict(zip(flags, row, strict=True)) for row in probabilities.tolist()]
    assert answer == scoring.encode(rows_as_objects)


# A batch is validated column by column; a mistake deep in a large one is named exactly
# as in a single request, with its row.
BATCH = [
    {"sex": "male", "pclass": "3rd", "age": 20 + i % 50, "sibsp": i % 9} for i in range(999)
] + [PASSENGER]
SEX_MESSAGE = "'sex' must be one of its allowed values"
SEXES = ["female", "male"]


@pytest.mark.parametrize(
    ("value", "field", "message", "allowed"),
    [
        ({"age": "29"}, "age", "'age' must be a number, got a string", RANGE_AGE),
        ({"age": True}, "age", "'age' must be a number, got a boolean", RANGE_AGE),
        ({"sibsp": False}, "sibsp", "'sibsp' must be an integer, got a boolean", RANGE_SIBSP),
        ({"age": None}, "age", "'age' must be a number, got null", RANGE_AGE),
        ({"age": [29]}, "age", "'age' must be a number, got an array", RANGE_AGE),
        ({"age": {"years": 29}}, "age", "'age' must be a number, got an object", RANGE_AGE),
        ({"age": float("nan")}, "age", "'age' must be a finite number", RANGE_AGE),
        ({"age": float("inf")}, "age", "'age' must be a finite number", RANGE_AGE),
        ({"age": -float("inf")}, "age", "'age' must be a finite number", RANGE_AGE),
        ({"age": 10**400}, "age", "'age' is outside the range", RANGE_AGE),
        ({"age": 1e308}, "age", "'age' is outside the range", RANGE_AGE),
        ({"age": 0.41}, "age", "'age' is outside the range", RANGE_AGE),
        ({"sibsp": 2**64}, "sibsp", "'sibsp' is outside the range", RANGE_SIBSP),
        ({"sibsp": 1.5}, "sibsp", "'sibsp' must be a whole number", RANGE_SIBSP),
        ({"sibsp": -1}, "sibsp", "'sibsp' is outside the range", RANGE_SIBSP),
        ({"sex": "Female"}, "sex", SEX_MESSAGE, SEXES),
        ({"sex": 1}, "sex", SEX_MESSAGE, SEXES),
        ({"sex": True}, "sex", SEX_MESSAGE, SEXES),
        ({"sex": None}, "sex", SEX_MESSAGE, SEXES),
        ({"sex": ["male"]}, "sex", SEX_MESSAGE, SEXES),
        ({"sex": {"male": 1}}, "sex", SEX_MESSAGE, SEXES),
        ({"colour": "red"}, "colour", "unknown input 'colour'", ["sex", "pclass", "age", "sibsp"]),
    ],
)
def test_a_mistake_in_row_537_of_a_large_batch_is_named_like_a_single_one(
    predictor, value, field, message, allowed
):
    rows = [dict(row) for row in BATCH]
    rows[537].update(value)
    with pytest.raises(InputError) as batch_error:
        predictor.predict_many(rows)
    with pytest.raises(InputError) as single_error:
        predictor.predict_one(rows[537])
    assert str(single_error.value).startswith(message)
    assert str(batch_error.value) == f"row 537: {single_error.value}"
    assert (batch_error.value.field, batch_error.value.allowed) == (field, allowed)
    assert batch_error.value.row == 537


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"sex": "male", "pclass": "3rd", "age": 30}, "sibsp", "missing input 'sibsp'"),
        ({}, "sex", "missing input 'sex'"),
        (
            {"sex": "male", "pclass": "3rd", "age": 30, "sibsp": 0, "fare": 7.25},
            "fare",
            "unknown input 'fare'",
        ),
        (["male", "3rd", 30, 0], None, "expected an object of named inputs"),
        ("male,3rd,30,0", None, "expected an object of named inputs"),
        (None, None, "expected an object of named inputs"),
        (7, None, "expected an object of named inputs"),
    ],
)
def test_a_row_of_the_wrong_shape_deep_in_a_batch_is_named(predictor, row, field, message):
    rows = [*BATCH[:537], row, *BATCH[537:]]
    with pytest.raises(InputError, match=f"^row 537: {message}") as error:
        predictor.predict_many(rows)
    assert (error.value.field, error.value.row) == (field, 537)


def test_a_batch_names_the_first_row_of_the_first_input_in_model_order(predictor):
    rows = [dict(row) for row in BATCH]
    rows[900]["sex"] = "unknown"  # sex comes before age in the model's inputs
    rows[700]["age"] = "old"
    rows[600]["age"] = 99
    with pytest.raises(InputError, match=r"^row 900: 'sex'"):
        predictor.predict_many(rows)
    rows[900]["sex"] = "male"
    with pytest.raises(InputError, match=r"^row 600: 'age' is outside the range") as error:
        predictor.predict_many(rows)
    assert error.value.allowed == RANGE_AGE
    rows[950]["colour"] = "red"  # a wrong set of inputs is named before any value
    with pytest.raises(InputError, match=r"^row 950: unknown input 'colour'"):
        predictor.predict_many(rows)


def test_a_large_batch_of_mixed_integers_and_floats_scores_like_single_rows(predictor):
    rows = [{**row, "age": float(row["age"]) + 0.5, "sibsp": float(row["sibsp"])} for row in BATCH]
    rows += BATCH
    probabilities = predictor.probabilities_many(rows)
    assert probabilities.dtype == np.float64 and probabilities.flags.c_contiguous
    assert probabilities.shape == (len(rows), len(FLAGS))
    assert predictor.labelled(probabilities) == predictor.predict_many(rows)
    assert predictor.labelled(probabilities) == [
        pytest.approx(predictor.predict_one(row)) for row in rows
    ]


@pytest.mark.parametrize("body", [[], {}, "text", 3, None, [1, 2]])
def test_bodies_that_are_not_input_objects_are_refused(predictor, body):
    score = predictor.predict_many if isinstance(body, list) else predictor.predict_one
    with pytest.raises(InputError):
        score(body)


def test_numbers_in_range_at_the_bounds_are_accepted(predictor):
    for age, sibsp in ((0.42, 0), (80, 8), (80.0, 8.0)):
        predictor.predict_one({**PASSENGER, "age": age, "sibsp": sibsp})


def test_info_names_engine_digests_and_metrics(predictor, forest_folder):
    info = predictor.info()
    manifest = bundle.read_manifest(forest_folder)
    assert info["engine"] == "onnxruntime"
    assert info["onnx_tolerance"] == 1e-5
    assert info["schema_digest"] == manifest["schema_digest"]
    assert info["bundle_digests"]["model.pkl"] == manifest["files"]["model.pkl"]["sha256"]
    assert info["metrics"]["accuracy"] == 0.8
