"""The restricted unpickler loads real models and refuses hostile pickles without running them."""

import builtins
import collections
import functools
import os
import pickle
import subprocess

import numpy as np
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from batcomputer_bundle import safe_pickle
from batcomputer_bundle.safe_pickle import UnsafePickleError

_RNG = np.random.default_rng(7)
_X = _RNG.normal(size=(120, 4))
_Y = (_X[:, 0] + _X[:, 1] > 0).astype(int)


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=5, max_depth=3, random_state=np.random.RandomState(1)),
        LogisticRegression(),
        GradientBoostingClassifier(n_estimators=3),
        HistGradientBoostingClassifier(max_iter=3),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_fitted_models_load_and_predict_the_same(estimator, protocol):
    estimator.fit(_X, _Y)
    loaded = safe_pickle.loads(pickle.dumps(estimator, protocol=protocol))
    np.testing.assert_array_equal(loaded.predict_proba(_X), estimator.predict_proba(_X))


@pytest.mark.parametrize("protocol", [2, 5])
def test_lookups_flags_and_plain_containers_load(protocol):
    plain = {
        "lookup": collections.OrderedDict(sex={"female": 0, "male": 1}),
        "numeric": {"type": "number", "minimum": 0.5, "maximum": 80.0},
        "flags": ["died", "survived"],
        "others": (frozenset({1}), {2}, b"raw", bytearray(b"x"), 1 + 2j, slice(1, 3), None, True),
        "numpy": [np.float64(2.5), np.int64(3), np.arange(6).reshape(2, 3), np.dtype("U5")],
        "generators": [np.random.default_rng(3), np.random.RandomState(4)],
    }
    loaded = safe_pickle.loads(pickle.dumps(plain, protocol=protocol))
    assert loaded["lookup"] == plain["lookup"]
    assert loaded["numeric"] == plain["numeric"]
    assert loaded["flags"] == plain["flags"]
    assert loaded["others"] == plain["others"]
    np.testing.assert_array_equal(loaded["numpy"][2], plain["numpy"][2])
    assert loaded["generators"][0].integers(1000) == np.random.default_rng(3).integers(1000)


class _Hostile:
    """Pickles to ``target(*args)``: what an attacker would put in a model.pkl."""

    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


def _dotted_global(module: str, name: str) -> bytes:
    """A protocol-4 pickle calling ``module`` + dotted ``name`` with one argument."""
    body = (
        pickle.SHORT_BINUNICODE
        + bytes([len(module)])
        + module.encode()
        + pickle.SHORT_BINUNICODE
        + bytes([len(name)])
        + name.encode()
        + pickle.STACK_GLOBAL
        + pickle.SHORT_BINUNICODE
        + b"\x02id"
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.STOP
    )
    return pickle.PROTO + b"\x04" + body


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def _hostile_cases(marker):
    command = f"touch {marker}"
    return [
        ("posix.system", _Hostile(os.system, command)),
        ("builtins.eval", _Hostile(builtins.eval, f"open({str(marker)!r}, 'w')")),
        ("builtins.exec", _Hostile(builtins.exec, f"open({str(marker)!r}, 'w')")),
        ("builtins.getattr", _Hostile(getattr, _Hostile(builtins.__import__, "os"), "system")),
        ("builtins.__import__", _Hostile(builtins.__import__, "os")),
        ("subprocess.Popen", _Hostile(subprocess.Popen, ["touch", str(marker)])),
        ("functools.partial", _Hostile(functools.partial, os.system, command)),
        ("io.open", _Hostile(open, str(marker), "w")),
        ("numpy.load", _Hostile(np.load, str(marker))),
        ("numpy.memmap", _Hostile(np.memmap, str(marker), np.uint8, "w+", 0, (8,))),
        ("numpy.fromfile", _Hostile(np.fromfile, str(marker))),
    ]


@pytest.mark.parametrize("case", range(11))
@pytest.mark.parametrize("protocol", [2, 5])
def test_hostile_pickles_are_refused_by_name_and_never_run(case, protocol, marker):
    expected_name, hostile = _hostile_cases(marker)[case]
    data = pickle.dumps({"model": [hostile]}, protocol=protocol)
    with pytest.raises(UnsafePickleError) as refused:
        safe_pickle.loads(data)
    assert expected_name in str(refused.value)
    assert refused.value.global_name == expected_name
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("sklearn.base", "os.system"),
        ("numpy", "lib.npyio.load"),
        ("sklearn", "__builtins__.eval"),
    ],
)
def test_dotted_attribute_paths_cannot_walk_out_of_the_allowed_packages(module, name):
    with pytest.raises(UnsafePickleError, match="dotted"):
        safe_pickle.loads(_dotted_global(module, name))


@pytest.mark.parametrize(
    ("module", "name", "reason"),
    [
        ("sklearn.utils", "check_array", "functions are not allowed"),
        ("numpy", "add", "functions are not allowed"),
        ("sklearn.base", "functools", "functions are not allowed"),
        ("sklearn.base", "no_such_thing", "no such class"),
        ("scipy.io", "netcdf_file", "files"),
        ("numpy", "memmap", "files"),
    ],
)
def test_non_class_or_file_touching_globals_in_allowed_packages_are_refused(module, name, reason):
    data = pickle.PROTO + b"\x02" + pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.STOP
    with pytest.raises(UnsafePickleError, match=reason):
        safe_pickle.loads(data)


def test_a_refused_global_is_named_even_inside_a_real_model(marker):
    model = LogisticRegression().fit(_X, _Y)
    model.sneaky = _Hostile(os.system, f"touch {marker}")
    data = pickle.dumps(model, protocol=5)
    with pytest.raises(UnsafePickleError, match=r"posix\.system"):
        safe_pickle.loads(data)
    assert not marker.exists()
