"""The bundle readers load real models and plain data; the rules they enforce, one by one.

The hostile cases (gadgets that would run code) are in test_bundle_gadgets.py.
"""

import importlib
import pickle

import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from batcomputer_bundle import safe_pickle
from batcomputer_bundle.safe_pickle import UnsafePickleError

_RNG = np.random.default_rng(7)
_X = _RNG.normal(size=(120, 4))
_Y = (_X[:, 0] + _X[:, 1] > 0).astype(int) + (_X[:, 2] > 1)


def _estimators():
    return [
        RandomForestClassifier(n_estimators=5, max_depth=3, random_state=np.random.RandomState(1)),
        LogisticRegression(),
        DecisionTreeClassifier(max_depth=4),
        ExtraTreesClassifier(n_estimators=3),
        GradientBoostingClassifier(n_estimators=3),
        HistGradientBoostingClassifier(max_iter=3),
        GaussianNB(),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("protocol", range(6))
def test_served_estimators_load_with_their_recorded_types_and_predict_the_same(
    estimator, protocol, classes
):
    target = np.minimum(_Y, classes - 1)
    estimator.fit(_X, target)
    data = pickle.dumps(estimator, protocol=protocol)
    recorded = safe_pickle.global_names(data)
    assert set(recorded) <= set(safe_pickle.MODEL_ALLOW_LIST)
    loaded = safe_pickle.load_model(data, recorded)
    np.testing.assert_array_equal(loaded.predict_proba(_X), estimator.predict_proba(_X))


def test_global_names_reads_the_exact_type_tree_without_unpickling():
    forest = RandomForestClassifier(n_estimators=2, max_depth=2).fit(_X, _Y)
    assert safe_pickle.global_names(pickle.dumps(forest, protocol=5)) == [
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        "numpy.dtype",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
    ]
    # Protocol 2 spells the same things the Python 2 / NumPy 1 way, read canonically.
    assert "numpy._core.multiarray._reconstruct" in safe_pickle.global_names(
        pickle.dumps(forest, protocol=2).replace(b"numpy._core", b"numpy.core")
    )


def test_a_class_outside_the_allow_list_is_refused_even_when_recorded():
    model = SVC().fit(_X, _Y)
    data = pickle.dumps(model, protocol=5)
    with pytest.raises(UnsafePickleError, match="allow-list") as refused:
        safe_pickle.load_model(data, safe_pickle.global_names(data))
    assert refused.value.global_name == "sklearn.svm._classes.SVC"


def test_an_allowed_class_not_recorded_in_bundle_json_is_refused():
    forest = RandomForestClassifier(n_estimators=2, max_depth=2).fit(_X, _Y)
    data = pickle.dumps(forest, protocol=5)
    recorded = [name for name in safe_pickle.global_names(data) if not name.endswith(".Tree")]
    with pytest.raises(UnsafePickleError, match=r"not recorded in bundle\.json") as refused:
        safe_pickle.load_model(data, recorded)
    assert refused.value.global_name == "sklearn.tree._tree.Tree"


@pytest.mark.parametrize("model_types", [None, []])
def test_a_bundle_that_records_no_types_loads_no_model(model_types):
    data = pickle.dumps(LogisticRegression().fit(_X, _Y), protocol=5)
    with pytest.raises(UnsafePickleError, match=r"records no model_types .*model\.onnx"):
        safe_pickle.load_model(data, model_types)


@pytest.mark.parametrize("model_types", ["sklearn.tree._tree.Tree", {"a": 1}, [1, 2], [None]])
def test_malformed_model_types_are_refused(model_types):
    data = pickle.dumps(LogisticRegression().fit(_X, _Y), protocol=5)
    with pytest.raises(UnsafePickleError, match="model_types must be a list"):
        safe_pickle.load_model(data, model_types)


def test_every_allow_listed_name_exists_in_this_servers_libraries():
    for name in safe_pickle.MODEL_ALLOW_LIST:
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), name


@pytest.mark.parametrize("protocol", range(6))
def test_seed_style_and_full_lookups_and_flags_load_as_plain_data(protocol):
    plain = {
        "lookup": {"sex": {"female": 0, "male": 1}, "pclass": {"1st": 0, "2nd": 1}},
        "numeric": {"type": "number", "minimum": 0.5, "maximum": 80.0, "none": None},
        "flags": ["died", "survived"],
        "others": (True, False, 2**70, -3, 1.5, ("nested", [1, [2, {"x": None}]])),
    }
    if protocol >= 3:
        plain["bytes"] = b"\x00raw"
    assert safe_pickle.load_data(pickle.dumps(plain, protocol=protocol)) == plain


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ({"sex": {"female": np.int64(0)}}, "numpy._core.multiarray.scalar"),
        ({"age": np.float64(2.0)}, "numpy._core.multiarray.scalar"),
        (np.array(["died", "survived"]), "numpy._core.numeric._frombuffer"),
        ({"flags": {"died", "survived"}}, None),
    ],
)
def test_data_pickles_refuse_numpy_values_and_sets(value, refused):
    with pytest.raises(UnsafePickleError) as error:
        safe_pickle.load_data(pickle.dumps(value, protocol=5))
    assert error.value.global_name == refused
    assert (refused or "EMPTY_SET") in str(error.value)


def test_protocol_2_bytes_need_a_global_and_are_refused_in_data():
    with pytest.raises(UnsafePickleError) as error:
        safe_pickle.load_data(pickle.dumps({"raw": b"x"}, protocol=2))
    assert error.value.global_name == "_codecs.encode"


def test_data_limits_are_bytes_depth_and_elements():
    with pytest.raises(UnsafePickleError, match="more than the 64 allowed"):
        safe_pickle.load_data(pickle.dumps(["x" * 100]), max_bytes=64)
    nested: list = []
    for _ in range(20):
        nested = [nested]
    with pytest.raises(UnsafePickleError, match="nested deeper than 16"):
        safe_pickle.load_data(pickle.dumps(nested))
    wide = {"flags": list(range(safe_pickle.MAX_ELEMENTS + 1))}
    with pytest.raises(UnsafePickleError, match="1000000 opcodes"):
        safe_pickle.load_data(pickle.dumps(wide))
    many = [[] for _ in range(safe_pickle.DATA_MAX_CONTAINERS)]  # plus the outer list
    with pytest.raises(UnsafePickleError, match="more than 100000 containers"):
        safe_pickle.load_data(pickle.dumps(many))
    assert len(safe_pickle.load_data(pickle.dumps(many[1:]))) == len(many) - 1
