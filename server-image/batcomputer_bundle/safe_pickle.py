"""Loading a bundle's pickles without letting any of their bytes become code.

A pickle is a program: every global it names is imported and may be called, and BUILD
hands attacker-chosen state to a class's ``__setstate__``. Two readers, two rules:

* ``load_data`` (``lookup.pkl``, ``flags.pkl``) reads plain data only: dicts, lists,
  tuples, strings, bytes, numbers, booleans and None. Every opcode is checked against
  a short allow-list *before* unpickling, so a pickle that names a global, calls,
  builds or instantiates anything is refused without running a byte of it. Size,
  nesting depth and element counts are capped.
* ``load_model`` (``model.pkl``) resolves a global only if it is recorded in the
  bundle's ``bundle.json`` (``model_types``, written by training from the pickle
  itself with ``global_names``) *and* on ``MODEL_ALLOW_LIST`` below, the reviewed
  classes and reconstruction helpers of the estimators we serve. Calls, NEWOBJ and
  BUILD are checked too: only allow-listed callables are called, and BUILD reaches
  only a ``__setstate__`` we reviewed (``REVIEWED_SETSTATE``) or, for a few plain
  attribute-bag classes of scikit-learn's losses, a checked attribute update.

Every refusal is an ``UnsafePickleError`` naming the global or opcode refused.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import copyreg
import importlib
import io
import pickle
import pickletools
from collections.abc import Callable, Collection, Iterator
from enum import Enum
from typing import Any, ClassVar

import numpy as np

DATA_MAX_BYTES = 16 << 20
MAX_DEPTH = 64
MAX_ELEMENTS = 1_000_000
DATA_MAX_CONTAINERS = 100_000
_DATA_MAX_DEPTH = 16

# The opcodes of a pickle of plain containers and scalars (protocols 0-5). Nothing
# here looks up a global, calls, builds or instantiates.
_DATA_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "NONE", "NEWTRUE", "NEWFALSE",
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
        "STRING", "BINSTRING", "SHORT_BINSTRING",
        "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
        "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
        "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    }
)  # fmt: skip
_CONTAINER_OPCODES = frozenset(
    {"EMPTY_DICT", "DICT", "EMPTY_LIST", "LIST", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"}
)
_GLOBAL_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL"})
# Never needed by a model written with pickle.dump: old-style instantiation, the
# extension registry, persistent ids and out-of-band buffers.
_MODEL_REFUSED_OPCODES = frozenset(
    {"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEXT_BUFFER"}
)
_STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING"}
)
_MEMO_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


class Role(Enum):
    """What a pickle may do with an allow-listed global."""

    CALL = "may be called or instantiated"
    ARGUMENT = "may only be passed to a reconstruction helper"


# The reviewed allow-list: every global the served estimators' pickles name. A model
# loads only if each global its pickle names is here AND in its bundle.json
# ``model_types``. Why each is safe: the estimators and loss objects only store the
# attributes they are given; the NumPy helpers rebuild arrays, dtypes, scalars and
# random states from bytes; nothing here opens files, imports by name or evaluates.
MODEL_ALLOW_LIST: dict[str, Role] = {
    # The shipped configurations (training/batcomputer_training/configs): random
    # forests and logistic regression.
    "sklearn.ensemble._forest.RandomForestClassifier": Role.CALL,
    "sklearn.tree._classes.DecisionTreeClassifier": Role.CALL,
    "sklearn.tree._tree.Tree": Role.CALL,
    "sklearn.linear_model._logistic.LogisticRegression": Role.CALL,
    # Their close relatives, as a data scientist would try them.
    "sklearn.ensemble._forest.ExtraTreesClassifier": Role.CALL,
    "sklearn.tree._classes.ExtraTreeClassifier": Role.CALL,
    "sklearn.ensemble._gb.GradientBoostingClassifier": Role.CALL,
    "sklearn.tree._classes.DecisionTreeRegressor": Role.CALL,
    "sklearn.dummy.DummyClassifier": Role.CALL,
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier": (
        Role.CALL
    ),
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper": Role.CALL,
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor": Role.CALL,
    "sklearn.preprocessing._label.LabelEncoder": Role.CALL,
    "sklearn.naive_bayes.GaussianNB": Role.CALL,
    "sklearn.pipeline.Pipeline": Role.CALL,
    "sklearn.preprocessing._data.StandardScaler": Role.CALL,
    # The gradient-boosting losses those models keep.
    "sklearn._loss.loss.HalfBinomialLoss": Role.CALL,
    "sklearn._loss.loss.HalfMultinomialLoss": Role.CALL,
    "sklearn._loss.link.Interval": Role.CALL,
    "sklearn._loss.link.LogitLink": Role.CALL,
    "sklearn._loss.link.MultinomialLogit": Role.CALL,
    "sklearn._loss._loss.CyHalfBinomialLoss": Role.CALL,
    "sklearn._loss._loss.CyHalfMultinomialLoss": Role.CALL,
    "sklearn._loss._loss.__pyx_unpickle_CyHalfMultinomialLoss": Role.CALL,
    # NumPy arrays, dtypes, scalars and random states.
    "numpy.ndarray": Role.ARGUMENT,
    "numpy.dtype": Role.CALL,
    "numpy._core.multiarray._reconstruct": Role.CALL,
    "numpy._core.multiarray.scalar": Role.CALL,
    "numpy._core.numeric._frombuffer": Role.CALL,
    "numpy.random._pickle.__randomstate_ctor": Role.CALL,
    "numpy.random._pickle.__generator_ctor": Role.CALL,
    "numpy.random._pickle.__bit_generator_ctor": Role.CALL,
    "numpy.random._mt19937.MT19937": Role.CALL,
    "numpy.random._pcg64.PCG64": Role.CALL,
    "numpy.random.bit_generator.SeedSequence": Role.CALL,
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence": Role.CALL,
    # Protocol 0-2 spellings of objects, bytes and sets (the callables are checked below).
    "copyreg._reconstructor": Role.CALL,
    "_codecs.encode": Role.CALL,
    "builtins.object": Role.ARGUMENT,
    "builtins.bytes": Role.CALL,
    "builtins.bytearray": Role.CALL,
    "builtins.set": Role.CALL,
    "builtins.frozenset": Role.CALL,
}

# The only ``__setstate__`` methods BUILD may reach (the class that defines the one an
# instance uses must be one of these): each stores arrays or attributes and runs
# nothing the state names. Subclasses that override ``__setstate__`` are refused.
REVIEWED_SETSTATE = frozenset(
    {
        "sklearn.base.BaseEstimator",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.random.mtrand.RandomState",
        "numpy.random.bit_generator.BitGenerator",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random._generator.Generator",
    }
)
# Classes with no ``__setstate__`` whose pickles carry a plain attribute dict: BUILD
# sets those attributes (string names, no dunders) and nothing else.
ATTRIBUTE_STATE_CLASSES = frozenset(
    {
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
    }
)

# Pickles written by NumPy 1.x name ``numpy.core``; NumPy 2 moved it to ``numpy._core``.
_MODULE_ALIASES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}
_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something this reader refuses; the message names it."""

    def __init__(self, reason: str, global_name: str | None = None) -> None:
        self.global_name = global_name
        self.reason = reason
        super().__init__(f"refused to load {global_name}: {reason}" if global_name else reason)


def _canonical_name(module: str, name: str) -> str:
    """``module.name`` as this reader spells it (Python 2 and NumPy 1 names mapped)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{_MODULE_ALIASES.get(module, module)}.{name}"


# ---------------------------------------------------------------- static scan


def _opcodes(data: bytes) -> Iterator[tuple[str, Any]]:
    """Every opcode and argument, without executing any; malformed pickles are refused."""
    try:
        for opcode, argument, _position in pickletools.genops(data):
            yield opcode.name, argument
    except UnsafePickleError:
        raise
    except Exception as error:
        # Truncated data behind a huge length prefix lands here too, before anything
        # is allocated for it.
        raise UnsafePickleError(f"not a well-formed pickle: {error}") from None


def _walk(data: bytes) -> Iterator[tuple[str, Any, str | None]]:
    """Each opcode, its argument and, for GLOBAL and STACK_GLOBAL, the name it loads.

    STACK_GLOBAL takes its name from the two strings pushed just before it (directly or
    from the memo), as every pickler writes it; a name built any other way reads as
    None and is refused by the callers.
    """
    recent: list[str | None] = []
    memo: dict[int, str | None] = {}
    for count, (name, argument) in enumerate(_opcodes(data), start=1):
        global_name = None
        if name in ("MEMOIZE", *_MEMO_PUT_OPCODES):
            index = len(memo) if name == "MEMOIZE" else argument
            if not isinstance(index, int) or not 0 <= index <= count:
                raise UnsafePickleError(f"memo index {index!r} is out of range")
            memo[index] = recent[-1] if recent else None
        elif name in _STRING_OPCODES or name in _MEMO_GET_OPCODES:
            pushed = argument if name in _STRING_OPCODES else memo.get(argument)
            recent = [*recent[-1:], pushed if isinstance(pushed, str) else None]
        elif name != "FRAME":
            if name == "GLOBAL":
                module, _, attribute = str(argument).partition(" ")
                global_name = _canonical_name(module, attribute)
            elif name == "STACK_GLOBAL" and len(recent) == 2 and None not in recent:
                global_name = _canonical_name(*recent)  # type: ignore[arg-type]
            recent = []
        yield name, argument, global_name


def _model_globals(data: bytes) -> Iterator[str]:
    """The globals a model pickle names, in order; refused opcodes stop the scan."""
    for name, _argument, global_name in _walk(data):
        if name in _MODEL_REFUSED_OPCODES:
            raise UnsafePickleError(f"opcode {name} is not allowed in a model pickle")
        if name in _GLOBAL_OPCODES:
            if global_name is None:
                raise UnsafePickleError("STACK_GLOBAL whose name cannot be read statically")
            yield global_name


def global_names(data: bytes) -> list[str]:
    """Every global a pickle names, as ``module.name``, read without unpickling it.

    Training records this list as ``bundle.json`` ``model_types``.
    """
    return sorted(set(_model_globals(data)))


# ---------------------------------------------------------------- plain data


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError("data pickles may not name any global", f"{module}.{name}")


def load_data(data: bytes, max_bytes: int = DATA_MAX_BYTES) -> Any:
    """Unpickle plain data (containers and scalars); anything else is refused unrun."""
    if len(data) > max_bytes:
        raise UnsafePickleError(f"{len(data)} bytes is more than the {max_bytes} allowed")
    containers = 0
    for count, (name, _argument, global_name) in enumerate(_walk(data), start=1):
        if name in _GLOBAL_OPCODES:
            raise UnsafePickleError("data pickles may not name any global", global_name)
        if name not in _DATA_OPCODES:
            raise UnsafePickleError(f"opcode {name} is not allowed in a data pickle")
        # Counted before unpickling: a few bytes per container could otherwise cost
        # a hundred times their size in memory.
        containers += name in _CONTAINER_OPCODES
        if containers > DATA_MAX_CONTAINERS or count > MAX_ELEMENTS:
            raise UnsafePickleError(
                f"more than {DATA_MAX_CONTAINERS} containers or {MAX_ELEMENTS} opcodes"
            )
    value = _NoGlobals(io.BytesIO(data)).load()
    _check_size(value, _DATA_MAX_DEPTH, descend_objects=False)
    return value


def _check_size(value: Any, max_depth: int, descend_objects: bool) -> list[Any]:
    """Refuse deep nesting and shared-reference blow-ups (counted at every reference).

    Returns every distinct object met that is not a plain container.
    """
    budget = MAX_ELEMENTS
    objects: dict[int, Any] = {}
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        budget -= 1
        if budget < 0:
            raise UnsafePickleError(
                f"more than {MAX_ELEMENTS} elements (shared references count each time)"
            )
        if depth > max_depth:
            raise UnsafePickleError(f"containers nested deeper than {max_depth}")
        if isinstance(item, dict):
            children: Iterator[Any] | Collection[Any] = (*item.keys(), *item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        elif isinstance(item, np.ndarray) and item.dtype.hasobject:
            children = list(item.flat)
        elif descend_objects and isinstance(getattr(item, "__dict__", None), dict):
            objects[id(item)] = item
            children = item.__dict__.values()
        else:
            objects[id(item)] = item
            continue
        pending.extend((child, depth + 1) for child in children)
    return list(objects.values())


# ---------------------------------------------------------------- native indexes

_TREE = "sklearn.tree._tree.Tree"
_TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
_HIST_GRADIENT_BOOSTING = (
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier"
)


def _out_of_range(values: np.ndarray, low: Any, high: Any) -> bool:
    return bool(np.any((values < low) | (values >= high)))


def _check_children(kind: str, left: np.ndarray, right: np.ndarray, inner: np.ndarray) -> None:
    # Training numbers nodes depth-first, so children always follow their parent: in
    # range and never a cycle.
    index = np.arange(len(inner))[inner]
    count = len(inner)
    if _out_of_range(left[inner], index + 1, count) or _out_of_range(
        right[inner], index + 1, count
    ):
        raise UnsafePickleError(f"a {kind} node points outside its tree", kind)


def _check_tree(tree: Any, n_features: int | None) -> None:
    # Tree.__setstate__ itself cuts node_count down to the node array it was given.
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    inner = left != -1
    if np.any(right[~inner] != -1):
        raise UnsafePickleError("a leaf with a right child", _TREE)
    _check_children(_TREE, left, right, inner)
    if n_features is not None and tree.n_features != n_features:
        raise UnsafePickleError(
            f"tree of {tree.n_features} features in an estimator of {n_features}", _TREE
        )
    if _out_of_range(feature[inner], 0, tree.n_features):
        raise UnsafePickleError("a node splits on a feature the tree does not have", _TREE)


def _check_tree_predictor(predictor: Any, categorical: np.ndarray | None) -> None:
    nodes = predictor.nodes
    inner = nodes["is_leaf"] == 0
    _check_children(_TREE_PREDICTOR, nodes["left"], nodes["right"], inner)
    if categorical is None:
        return
    features = nodes["feature_idx"][inner]
    if _out_of_range(features, 0, len(categorical)):
        raise UnsafePickleError(
            "a node splits on a feature the model does not have", _TREE_PREDICTOR
        )
    on_categories = inner & (nodes["is_categorical"] != 0)
    if np.any(~categorical[nodes["feature_idx"][on_categories]].astype(bool)) or _out_of_range(
        nodes["bitset_idx"][on_categories], 0, len(predictor.raw_left_cat_bitsets)
    ):
        raise UnsafePickleError("a categorical split without its categories", _TREE_PREDICTOR)


def _check_native_indexes(objects: list[Any]) -> None:
    """Compiled predict code walks tree nodes by the indexes they hold, without bounds
    checks: every such index must stay inside its array, or predict would read outside it.
    """
    by_kind: dict[str, list[Any]] = {}
    for item in objects:
        by_kind.setdefault(_qualified(type(item)), []).append(item)
    owned = {
        id(owner.tree_): getattr(owner, "n_features_in_", None)
        for owner in objects
        if _qualified(type(getattr(owner, "tree_", None))) == _TREE
    }
    for tree in by_kind.get(_TREE, []):
        _check_tree(tree, owned.get(id(tree)))
    for predictor in by_kind.get(_TREE_PREDICTOR, []):
        _check_tree_predictor(predictor, None)
    for model in by_kind.get(_HIST_GRADIENT_BOOSTING, []):
        categorical = np.asarray(model._bin_mapper.is_categorical_)
        if len(categorical) != model.n_features_in_:
            raise UnsafePickleError(
                "categorical flags for another number of features", _HIST_GRADIENT_BOOSTING
            )
        for predictors in model._predictors:
            for predictor in predictors:
                _check_tree_predictor(predictor, categorical)


# ---------------------------------------------------------------- the model


def _checked_reconstructor(allowed: Callable[[Any], bool]) -> Callable[..., Any]:
    def reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if base is not object or state is not None or not allowed(cls):
            raise UnsafePickleError(
                "copyreg._reconstructor only rebuilds an allowed class on object",
                "copyreg._reconstructor",
            )
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]

    return reconstructor


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Protocol 2 spells bytes as _codecs.encode(text, "latin1"); any other codec (a
    # compressor, a lookup by name) is not what a pickler writes.
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1 or errors != "strict":
        raise UnsafePickleError("_codecs.encode only decodes latin-1 text", "_codecs.encode")
    return codecs.encode(text, "latin1")


def _without_size(kind: type) -> Callable[..., Any]:
    # Protocol 2 writes bytes() for b""; bytes(n) would allocate n bytes for nothing.
    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise UnsafePickleError("only copies, never sized allocations", _qualified(kind))
        return kind(*args)

    return build


_CHECKED_HELPERS: dict[str, Callable[..., Any]] = {
    "_codecs.encode": _latin1_encode,
    "builtins.bytes": _without_size(bytes),
    "builtins.bytearray": _without_size(bytearray),
}


class _ModelUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The pure-Python unpickler, so BUILD, REDUCE and NEWOBJ can be checked."""

    def __init__(self, data: bytes, recorded: frozenset[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._recorded = recorded
        # Keyed by id, holding the object so that no id is ever reused while loading.
        self._callables: dict[int, Any] = {}
        self._classes: dict[int, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = _canonical_name(module, name)
        _check_global(full, self._recorded)
        found = _resolve(full)
        if full == "copyreg._reconstructor":
            found = _checked_reconstructor(lambda cls: id(cls) in self._classes)
        found = _CHECKED_HELPERS.get(full, found)
        if MODEL_ALLOW_LIST[full] is Role.CALL:
            self._callables[id(found)] = found
            if isinstance(found, type):
                self._classes[id(found)] = found
        return found

    def _refuse_unless(self, allowed: dict[int, Any], target: Any, how: str) -> None:
        if id(target) not in allowed:
            raise UnsafePickleError(f"{how} {_describe(target)} is not allowed")

    def load_reduce(self) -> None:
        self._refuse_unless(self._callables, self.stack[-2], "calling")
        super().load_reduce()

    def load_newobj(self) -> None:
        self._refuse_unless(self._classes, self.stack[-2], "instantiating")
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._refuse_unless(self._classes, self.stack[-3], "instantiating")
        super().load_newobj_ex()

    def load_build(self) -> None:
        state, instance = self.stack[-1], self.stack[-2]
        cls = type(instance)
        owner = next((c for c in cls.__mro__ if "__setstate__" in c.__dict__), None)
        if owner is not None:
            if _qualified(owner) not in REVIEWED_SETSTATE:
                raise UnsafePickleError(
                    f"BUILD onto {_qualified(cls)} would run "
                    f"{_qualified(owner)}.__setstate__, which is not reviewed"
                )
            self.stack.pop()
            # Looked up on the class: an instance attribute must not stand in for it.
            cls.__setstate__(instance, state)
            return
        if _qualified(cls) not in ATTRIBUTE_STATE_CLASSES or id(cls) not in self._classes:
            raise UnsafePickleError(f"BUILD onto {_qualified(cls)}, which has no __setstate__")
        if not isinstance(state, dict) or not all(
            isinstance(key, str) and not key.startswith("__") for key in state
        ):
            raise UnsafePickleError(
                f"BUILD onto {_qualified(cls)} with state other than attributes"
            )
        self.stack.pop()
        instance.__dict__.update(state)

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def _check_global(full: str, recorded: frozenset[str]) -> None:
    if full not in MODEL_ALLOW_LIST:
        raise UnsafePickleError("not on the server's allow-list of model classes", full)
    if not recorded:
        raise UnsafePickleError(
            "bundle.json records no model_types (retrain the bundle, or ship a verified "
            "model.onnx so model.pkl is never unpickled)",
            full,
        )
    if full not in recorded:
        raise UnsafePickleError("not recorded in bundle.json model_types", full)


def _resolve(full: str) -> Any:
    module, _, name = full.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise UnsafePickleError("no such global in this server's libraries", full) from None


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(target: Any) -> str:
    if isinstance(target, type):
        return _qualified(target)
    return f"a {_qualified(type(target))} object"


def _recorded_types(model_types: Any) -> frozenset[str]:
    """``bundle.json`` ``model_types`` as a set; anything but a list of names is refused."""
    if model_types is None:
        return frozenset()
    if not isinstance(model_types, list) or not all(isinstance(n, str) for n in model_types):
        raise UnsafePickleError("bundle.json model_types must be a list of module.Class names")
    return frozenset(model_types)


def load_model(data: bytes, model_types: Any) -> Any:
    """Unpickle an estimator, resolving only globals both recorded and allow-listed.

    Every global the pickle names is checked before anything is unpickled, so a
    refused one never runs, whatever comes before it in the pickle.
    """
    recorded = _recorded_types(model_types)
    for full in _model_globals(data):
        _check_global(full, recorded)
    model = _ModelUnpickler(data, recorded).load()
    _check_native_indexes(_check_size(model, MAX_DEPTH, descend_objects=True))
    return model
