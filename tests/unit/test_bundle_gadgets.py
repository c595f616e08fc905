"""A corpus of hostile bundle pickles: each is refused before any of it runs.

Every code-running gadget would create a marker file; a control unpickles it with plain
``pickle.loads`` to prove it is live, and the bundle readers must refuse it, name the
refused global and leave no marker. The attacker is assumed to control bundle.json too,
so model gadgets record every global they use in ``model_types``.
"""

from __future__ import annotations

import contextlib
import copyreg
import ctypes
import functools
import importlib
import operator
import os
import pickle
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _pytest.pathlib
import joblib
import numpy as np
import numpy.ctypeslib
import numpy.f2py.crackfortran
import pytest
import scipy.io.wavfile
import scipy.stats._continuous_distns
import sklearn.datasets
import sklearn.utils._testing
from _pytest._py.path import LocalPath
from _server_bundles import FLAGS, LOOKUP, fitted, refresh_digests, write_bundle
from numpy.testing._private import utils as numpy_testing_utils
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from batcomputer_bundle import bundle, safe_pickle
from batcomputer_bundle.bundle import BundleError
from batcomputer_bundle.safe_pickle import UnsafePickleError
from batcomputer_server.predictor import Predictor


class _Call:
    """Pickles as ``target(*args)`` (then BUILD ``state``); a target may be another _Call."""

    def __init__(self, target: Any, *args: Any, state: Any = None) -> None:
        self.target, self.args, self.state = target, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        reduced = (self.target, self.args)
        return reduced if self.state is None else (*reduced, self.state)

    def __call__(self, *args: Any) -> Any:  # pickle accepts only callables as targets
        raise AssertionError("never called: it only stands for a call inside a pickle")


def _import_os() -> _Call:
    return _Call(importlib.import_module, "os")


def _training() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(60, 3))
    return matrix, (matrix[:, 0] > 0).astype(int)


@dataclass(frozen=True)
class Gadget:
    name: str
    refused: str  # the global the model reader names
    build: Any  # marker path -> object whose pickle runs the gadget
    marker: str = "pwned"


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _open(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _scipy_distribution(marker: Path) -> _Call:
    # copyreg._reconstructor + BUILD onto a SciPy distribution: rv_generic.__setstate__
    # exec()s the state's argument-parser template.
    template = f"import os\nos.system({_touch(marker)!r})\n"
    state = {"_parse_arg_template": template, "shapes": None, "numargs": 0}
    return _Call(
        copyreg._reconstructor,
        scipy.stats._continuous_distns.norm_gen,
        object,
        None,
        state=state,
    )


GADGETS = [
    Gadget("os.system", "posix.system", lambda m: _Call(os.system, _touch(m))),
    Gadget("eval", "builtins.eval", lambda m: _Call(eval, _open(m))),
    Gadget("exec", "builtins.exec", lambda m: _Call(exec, _open(m))),
    Gadget(
        "getattr chain",
        "builtins.getattr",
        lambda m: _Call(_Call(getattr, _import_os(), "system"), _touch(m)),
    ),
    Gadget(
        "__import__",
        "builtins.__import__",
        lambda m: _Call(__import__, "os", _Call(os.system, _touch(m))),
    ),
    Gadget(
        "importlib.import_module",
        "importlib.import_module",
        lambda m: _Call(importlib.import_module, "os", _Call(os.system, _touch(m))),
    ),
    Gadget("subprocess.Popen", "subprocess.Popen", lambda m: _Call(subprocess.Popen, ["touch", m])),
    Gadget(
        "functools.partial",
        "functools.partial",
        lambda m: _Call(_Call(functools.partial, os.system, _touch(m))),
    ),
    Gadget(
        "operator.attrgetter",
        "operator.attrgetter",
        lambda m: _Call(_Call(_Call(operator.attrgetter, "system"), _import_os()), _touch(m)),
    ),
    Gadget(
        "operator.methodcaller",
        "operator.methodcaller",
        lambda m: _Call(_Call(operator.methodcaller, "system", _touch(m)), _import_os()),
    ),
    Gadget(
        "scipy distribution __setstate__ exec",
        "scipy.stats._continuous_distns.norm_gen",
        _scipy_distribution,
    ),
    Gadget(
        "numpy.testing runstring exec",
        "numpy.testing._private.utils.runstring",
        lambda m: _Call(numpy_testing_utils.runstring, _open(m), {}),
    ),
    Gadget(
        "sklearn.utils._testing runs a Python script",
        "sklearn.utils._testing.assert_run_python_script_without_output",
        lambda m: _Call(sklearn.utils._testing.assert_run_python_script_without_output, _open(m)),
    ),
    Gadget(
        "numpy.f2py myeval",
        "numpy.f2py.crackfortran.myeval",
        lambda m: _Call(numpy.f2py.crackfortran.myeval, f"__import__('os').system({_touch(m)!r})"),
    ),
    Gadget(
        "joblib.dump writes a file",
        "joblib.numpy_pickle.dump",
        lambda m: _Call(joblib.dump, [1], str(m)),
    ),
    Gadget(
        "pytest LocalPath.ensure creates a file",
        "operator.methodcaller",
        lambda m: _Call(_Call(operator.methodcaller, "ensure"), _Call(LocalPath, str(m))),
    ),
    Gadget(
        "joblib.Memory creates its cache folder",
        "joblib.memory.Memory",
        lambda m: _Call(joblib.Memory, str(m)),
    ),
    Gadget(
        "pytest make_numbered_dir",
        "_pytest.pathlib.make_numbered_dir",
        lambda m: _Call(_pytest.pathlib.make_numbered_dir, m.parent, "pwned-"),
        marker="pwned-0",
    ),
    Gadget(
        "sklearn.datasets.get_data_home creates a folder",
        "sklearn.datasets._base.get_data_home",
        lambda m: _Call(sklearn.datasets.get_data_home, str(m)),
    ),
    Gadget(
        "numpy.save writes a file",
        "numpy.save",
        lambda m: _Call(np.save, str(m), [1, 2]),
        marker="pwned.npy",
    ),
    Gadget(
        "scipy.io.wavfile.write writes a file",
        "scipy.io.wavfile.write",
        lambda m: _Call(scipy.io.wavfile.write, str(m), 8000, np.zeros(2)),
    ),
    Gadget(
        "numpy.ctypeslib.load_library + libc system",
        "operator.methodcaller",
        lambda m: _Call(
            _Call(operator.methodcaller, "system", _touch(m).encode()),
            _Call(numpy.ctypeslib.load_library, "libc.so.6", _libc_folder()),
        ),
    ),
    Gadget(
        "ctypes.CDLL + libc system",
        "operator.methodcaller",
        lambda m: _Call(
            _Call(operator.methodcaller, "system", _touch(m).encode()),
            _Call(ctypes.CDLL, "libc.so.6"),
        ),
    ),
    Gadget(
        "an allowed estimator carrying a call in its state",
        "posix.system",
        lambda m: _sneaky_model(_Call(os.system, _touch(m))),
    ),
]


def _sneaky_model(payload: _Call) -> LogisticRegression:
    model = LogisticRegression().fit(*_training())
    model.sneaky = payload
    return model


def _libc_folder() -> str:
    """The folder of the C library this process runs on (load_library wants a folder)."""
    with open("/proc/self/maps") as maps:
        paths = [line.split()[-1] for line in maps if line.rstrip().endswith("/libc.so.6")]
    return str(Path(paths[0]).parent)


def _gadget_data(gadget: Gadget, tmp_path: Path, protocol: int = 5) -> tuple[bytes, Path]:
    marker = tmp_path / gadget.marker
    return pickle.dumps(gadget.build(marker), protocol=protocol), marker


def _ran(marker: Path) -> bool:
    return marker.exists()


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.name)
def test_control_each_gadget_runs_code_under_plain_pickle(gadget, tmp_path):
    data, marker = _gadget_data(gadget, tmp_path)
    # Several gadgets fail after their side effect; the marker tells.
    with contextlib.suppress(Exception):
        pickle.loads(data)  # the unsafe way, on purpose: proves the gadget is live
    deadline = time.monotonic() + 10  # subprocess.Popen touches the marker in a child
    while not _ran(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ran(marker)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.name)
def test_the_model_reader_refuses_each_gadget_by_name_before_it_runs(gadget, protocol, tmp_path):
    data, marker = _gadget_data(gadget, tmp_path, protocol)
    recorded = safe_pickle.global_names(data)  # the attacker records everything
    with pytest.raises(UnsafePickleError, match="allow-list") as refused:
        safe_pickle.load_model(data, recorded)
    assert refused.value.global_name == gadget.refused
    assert gadget.refused in str(refused.value)
    assert not _ran(marker)


@pytest.mark.parametrize("gadget", GADGETS, ids=lambda g: g.name)
def test_the_data_reader_refuses_each_gadget_before_it_runs(gadget, tmp_path):
    data, marker = _gadget_data(gadget, tmp_path)
    with pytest.raises(UnsafePickleError, match="may not name any global") as refused:
        safe_pickle.load_data(data)
    assert refused.value.global_name in safe_pickle.global_names(data)
    assert not _ran(marker)


def _all_gadget_globals() -> list[str]:
    names: set[str] = set()
    for gadget in GADGETS:
        data = pickle.dumps(gadget.build(Path("/nonexistent/pwned")), protocol=5)
        names.update(safe_pickle.global_names(data))
    return sorted(names - set(safe_pickle.MODEL_ALLOW_LIST))


@pytest.mark.parametrize("name", _all_gadget_globals())
def test_every_global_the_gadgets_use_is_refused_on_its_own(name):
    data = _proto2(_op_global(name))
    with pytest.raises(UnsafePickleError, match="allow-list") as refused:
        safe_pickle.load_model(data, [name])
    assert refused.value.global_name == name


# -- structural attacks on the model reader (allowed names, hostile use) -----------------


def _op_global(name: str) -> bytes:
    module, _, attribute = name.rpartition(".")
    return pickle.GLOBAL + f"{module}\n{attribute}\n".encode()


def _proto2(*parts: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + b"".join(parts) + pickle.STOP


def _unicode(text: str) -> bytes:
    return pickle.BINUNICODE + struct.pack("<I", len(text)) + text.encode()


_FOREST = "sklearn.ensemble._forest.RandomForestClassifier"
_LOSS = "sklearn._loss.loss.HalfBinomialLoss"
_STRUCTURAL = {
    "calling numpy.ndarray directly (an allocation)": (
        _proto2(
            _op_global("numpy.ndarray"),
            pickle.MARK, pickle.MARK,
            pickle.BININT, struct.pack("<i", 10**9), pickle.BININT, struct.pack("<i", 10**9),
            pickle.TUPLE, pickle.TUPLE, pickle.REDUCE,
        ),
        ["numpy.ndarray"],
        "calling numpy.ndarray is not allowed",
    ),
    "copyreg._reconstructor onto a base other than object": (
        _proto2(
            _op_global("copyreg._reconstructor"),
            pickle.MARK, _op_global(_FOREST), _op_global("numpy.dtype"), _unicode("f8"),
            pickle.TUPLE, pickle.REDUCE,
        ),
        ["copyreg._reconstructor", _FOREST, "numpy.dtype"],
        "only rebuilds an allowed class on object",
    ),
    "_codecs.encode with a codec other than latin-1": (
        _proto2(
            _op_global("_codecs.encode"),
            pickle.MARK, _unicode("x" * 64), _unicode("zlib_codec"), pickle.TUPLE, pickle.REDUCE,
        ),
        ["_codecs.encode"],
        "only decodes latin-1",
    ),
    "bytes(n): a sized allocation": (
        _proto2(
            _op_global("builtins.bytes"), pickle.LONG1, b"\x06\x00\x10\xa5\xd4\xe8\x00",
            pickle.TUPLE1, pickle.REDUCE,
        ),
        ["builtins.bytes"],
        "only copies, never sized allocations",
    ),
    "BUILD onto a class object": (
        _proto2(_op_global(_FOREST), pickle.EMPTY_DICT, pickle.BUILD),
        [_FOREST],
        "has no __setstate__",
    ),
    "BUILD with slot state onto an attribute class": (
        _proto2(
            _op_global(_LOSS), pickle.EMPTY_TUPLE, pickle.NEWOBJ,
            pickle.NONE, pickle.EMPTY_DICT, _unicode("__class__"), _op_global(_FOREST),
            pickle.SETITEM, pickle.TUPLE2, pickle.BUILD,
        ),
        [_LOSS, _FOREST],
        "state other than attributes",
    ),
    "BUILD onto a Cython loss made by a NumPy helper": (
        _proto2(
            _op_global("numpy.random._pickle.__bit_generator_ctor"),
            _op_global("sklearn._loss._loss.CyHalfBinomialLoss"), pickle.TUPLE1, pickle.REDUCE,
            pickle.EMPTY_DICT, pickle.BUILD,
        ),
        ["numpy.random._pickle.__bit_generator_ctor", "sklearn._loss._loss.CyHalfBinomialLoss"],
        "CyHalfBinomialLoss, which has no __setstate__",
    ),
    "instantiating a helper function with NEWOBJ": (
        _proto2(_op_global("numpy._core.multiarray.scalar"), pickle.EMPTY_TUPLE, pickle.NEWOBJ),
        ["numpy._core.multiarray.scalar"],
        "instantiating a builtins.builtin_function_or_method object is not allowed",
    ),
    "a STACK_GLOBAL whose name is hidden behind DUP": (
        pickle.PROTO + b"\x04" + _unicode("posix") + pickle.DUP + pickle.STACK_GLOBAL + pickle.STOP,
        ["posix.posix"],
        "cannot be read statically",
    ),
    "INST (old-style instantiation)": (
        pickle.INST + b"sklearn.ensemble._forest\nRandomForestClassifier\n" + pickle.STOP,
        [_FOREST],
        "opcode INST",
    ),
    "EXT1 (the extension registry)": (_proto2(pickle.EXT1, b"\x01"), [], "opcode EXT1"),
    "BINPERSID (persistent ids)": (
        _proto2(_unicode("x"), pickle.BINPERSID),
        [],
        "opcode BINPERSID",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", _STRUCTURAL, ids=list(_STRUCTURAL))
def test_allowed_names_used_in_hostile_ways_are_refused(case):
    data, recorded, message = _STRUCTURAL[case]
    with pytest.raises(UnsafePickleError, match=message):
        safe_pickle.load_model(data, recorded)


def test_an_array_whose_state_claims_more_data_than_it_has_is_an_error_not_an_allocation():
    state = (1, (10**6, 10**6), np.dtype("f8"), False, b"\0" * 8)
    hostile = _Call(np._core.multiarray._reconstruct, np.ndarray, (0,), b"b", state=state)
    data = pickle.dumps(hostile, protocol=2)
    with pytest.raises(ValueError, match="size"):
        safe_pickle.load_model(data, safe_pickle.global_names(data))


# -- hostile indexes for compiled predict code --------------------------------------------


def _forest_with(change) -> RandomForestClassifier:
    """A fitted forest whose first tree pickles with the state ``change`` rewrote."""
    forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0)
    forest.fit(*_training())
    tree = forest.estimators_[0].tree_
    cls, args, state = tree.__reduce__()
    state["nodes"] = state["nodes"].copy()
    change(state)
    # Written exactly as scikit-learn writes a tree: REDUCE Tree(args), BUILD state.
    forest.estimators_[0].tree_ = _Call(cls, *args, state=state)
    return forest


def _set_node(field: str, value: int):
    def change(state):
        state["nodes"][field][0] = value

    return change


_HOSTILE_TREES = {
    "left child far past the node array": (_set_node("left_child", 10**6), "outside its tree"),
    "right child pointing back at the root (a cycle)": (
        _set_node("right_child", 0),
        "outside its tree",
    ),
    "a split on feature 99 of 3": (_set_node("feature", 99), "feature the tree does not have"),
}


@pytest.mark.parametrize("case", _HOSTILE_TREES, ids=list(_HOSTILE_TREES))
def test_trees_whose_indexes_leave_their_arrays_are_refused(case):
    change, message = _HOSTILE_TREES[case]
    data = pickle.dumps(_forest_with(change), protocol=5)
    with pytest.raises(UnsafePickleError, match=message) as refused:
        safe_pickle.load_model(data, safe_pickle.global_names(data))
    assert refused.value.global_name == "sklearn.tree._tree.Tree"


def test_a_tree_of_more_features_than_its_estimator_is_refused():
    small = DecisionTreeClassifier(max_depth=2).fit(*_training())
    wide = DecisionTreeClassifier(max_depth=2).fit(np.tile(_training()[0], 3), _training()[1])
    small.tree_ = wide.tree_
    data = pickle.dumps(small, protocol=5)
    with pytest.raises(UnsafePickleError, match="tree of 9 features in an estimator of 3"):
        safe_pickle.load_model(data, safe_pickle.global_names(data))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("left", 10**6, "outside its tree"),
        ("feature_idx", 7, "feature the model does not have"),
        ("is_categorical", 1, "categorical split without its categories"),
    ],
)
def test_histogram_boosting_nodes_whose_indexes_leave_their_arrays_are_refused(
    field, value, message
):
    model = HistGradientBoostingClassifier(max_iter=2).fit(*_training())
    predictor = model._predictors[0][0]
    predictor.nodes = predictor.nodes.copy()
    predictor.nodes[field][0] = value
    data = pickle.dumps(model, protocol=5)
    with pytest.raises(UnsafePickleError, match=message):
        safe_pickle.load_model(data, safe_pickle.global_names(data))


# -- size attacks on both readers ---------------------------------------------------------


def _nested_lists(depth: int) -> bytes:
    return pickle.PROTO + b"\x04" + pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1) + b"."


def _laughs(levels: int) -> list:
    """A list holding the previous list ten times, ``levels`` deep: tiny pickle, 10**levels."""
    laughs: list = [None]
    for _ in range(levels):
        laughs = [laughs] * 10
    return laughs


_SIZE_ATTACKS = {
    "nested 100000 deep": (_nested_lists(100_000), "nested deeper than"),
    "billion laughs (shared references)": (
        pickle.dumps(_laughs(9), protocol=4),
        "more than 1000000 elements",
    ),
    "BINUNICODE8 claiming 2**62 bytes": (
        pickle.PROTO + b"\x04" + pickle.BINUNICODE8 + struct.pack("<Q", 2**62) + b"x.",
        "not a well-formed pickle",
    ),
    "BINBYTES8 claiming 2**62 bytes": (
        pickle.PROTO + b"\x04" + pickle.BINBYTES8 + struct.pack("<Q", 2**62) + b"x.",
        "not a well-formed pickle",
    ),
    "LONG4 claiming 2**31 bytes": (
        pickle.PROTO + b"\x02" + pickle.LONG4 + struct.pack("<i", 2**31 - 1) + b"x.",
        "not a well-formed pickle",
    ),
    "LONG_BINPUT at memo index 2**32-1": (
        pickle.PROTO + b"\x02" + pickle.NONE + pickle.LONG_BINPUT + b"\xff\xff\xff\xff.",
        "memo index 4294967295 is out of range",
    ),
    "not a pickle at all": (b"\xff\xfe garbage", "not a well-formed pickle"),
}


@pytest.mark.parametrize("case", _SIZE_ATTACKS, ids=list(_SIZE_ATTACKS))
def test_size_bombs_are_refused_by_both_readers(case):
    data, message = _SIZE_ATTACKS[case]
    with pytest.raises(UnsafePickleError, match=message):
        safe_pickle.load_data(data)
    with pytest.raises(UnsafePickleError, match=message):
        safe_pickle.load_model(data, [])


@pytest.mark.parametrize("where", ["attribute", "object array"])
def test_a_memo_bomb_inside_a_real_model_is_refused(where):
    model = LogisticRegression().fit(*_training())
    if where == "attribute":
        model.extra_ = _laughs(7)
    else:
        model.extra_ = np.empty(2, dtype=object)
        model.extra_[1] = _laughs(7)
    data = pickle.dumps(model, protocol=5)
    assert len(data) < 10_000
    with pytest.raises(UnsafePickleError, match="more than 1000000 elements"):
        safe_pickle.load_model(data, safe_pickle.global_names(data))


# -- through the predictor: a hostile bundle never loads ---------------------------------


_SCIPY = next(g for g in GADGETS if g.refused == "scipy.stats._continuous_distns.norm_gen")


@pytest.mark.parametrize("target", [bundle.LOOKUP_FILE, bundle.FLAGS_FILE])
def test_a_hostile_lookup_or_flags_file_never_loads(target, tmp_path):
    folder = write_bundle(tmp_path / "b")
    marker = tmp_path / "pwned"
    honest = LOOKUP if target == bundle.LOOKUP_FILE else FLAGS
    (folder / target).write_bytes(pickle.dumps([honest, _scipy_distribution(marker)]))
    refresh_digests(folder)
    with pytest.raises(BundleError, match=rf"{target}: refused to load copyreg\._reconstructor"):
        Predictor.load(folder)
    assert not marker.exists()


def test_a_hostile_model_without_onnx_never_loads_even_with_its_types_recorded(tmp_path):
    marker = tmp_path / "pwned"
    model = fitted()
    model.sneaky = _scipy_distribution(marker)
    data = pickle.dumps(model, protocol=5)
    folder = write_bundle(
        tmp_path / "b", model=fitted(), with_onnx=False, model_types=safe_pickle.global_names(data)
    )
    (folder / bundle.MODEL_FILE).write_bytes(data)
    refresh_digests(folder)
    with pytest.raises(
        BundleError, match=r"model\.pkl: refused to load scipy\.stats\._continuous_distns\.norm_gen"
    ):
        Predictor.load(folder)
    assert not marker.exists()


def test_a_verified_model_onnx_means_model_pkl_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    folder = write_bundle(tmp_path / "b")
    (folder / bundle.MODEL_FILE).write_bytes(pickle.dumps(_Call(os.system, _touch(marker))))
    refresh_digests(folder)
    predictor = Predictor.load(folder)
    assert predictor.engine.name == "onnxruntime"
    assert "model.pkl was not unpickled" in predictor.engine_reason
    assert not marker.exists()


def test_the_self_check_reference_comes_from_bundle_json(tmp_path):
    """A model.onnx that disagrees with bundle.json's recorded probabilities is not used."""
    folder = write_bundle(tmp_path / "b")
    manifest = bundle.read_manifest(folder)
    manifest["self_check"]["probabilities"] = [
        [1.0 - p[0], 1.0 - p[1]] for p in manifest["self_check"]["probabilities"]
    ]
    manifest.pop("format")
    bundle.write_manifest(folder, manifest)
    with pytest.raises(BundleError, match="self_check probabilities"):
        Predictor.load(folder)
