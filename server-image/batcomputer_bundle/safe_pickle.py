"""A restricted unpickler for model bundles.

A pickle is a program: every global it names is imported and may be called. This
unpickler resolves only classes from scikit-learn, NumPy and SciPy, the plain
containers, and a short explicit list of reconstruction helpers those libraries'
pickles need. Everything else — ``os.system``, ``builtins.eval``, ``functools.partial``,
any plain function from the allowed packages — is refused with ``UnsafePickleError``.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

_ALLOWED_CLASS_PACKAGES = ("sklearn", "numpy", "scipy")

# Classes inside the allowed packages whose constructors touch files, the network
# or native memory; a pickle could call them with arguments of its choosing.
_REFUSED_CLASS_MODULES = (
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.ctypeslib",
    "numpy.lib._datasource",
    "numpy.lib._npyio_impl",
    "numpy.lib.npyio",
    "numpy._core.memmap",
    "numpy.core.memmap",
    "scipy.io",
    "scipy._lib",
    "scipy.datasets",
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.utils._testing",
)
_REFUSED_CLASS_NAMES = frozenset({"memmap", "DataSource", "Repository", "NpzFile"})

_PLAIN_BUILTINS = frozenset(
    {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "bytearray",
        "complex",
        "slice",
        "object",
    }
)

# The functions (not classes) that NumPy's and the standard library's pickles call to
# rebuild arrays, scalars, random generators and protocol-2 byte strings.
_RECONSTRUCTION_HELPERS = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    }
)

# Pickles written by NumPy 1.x name ``numpy.core``; NumPy 2 moved it to ``numpy._core``.
_MODULE_ALIASES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; the message names it."""

    def __init__(self, module: str, name: str, reason: str) -> None:
        self.global_name = f"{module}.{name}"
        super().__init__(f"refused to load {self.global_name} from a pickle: {reason}")


def _in_package(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles spell some names the Python 2 way (``__builtin__``, ``commands``).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        module = _MODULE_ALIASES.get(module, module)
        if "." in name:
            raise UnsafePickleError(module, name, "dotted attribute paths are not allowed")
        if module == "builtins":
            if name in _PLAIN_BUILTINS:
                return super().find_class(module, name)
            raise UnsafePickleError(module, name, "only plain container builtins are allowed")
        if (module, name) in _RECONSTRUCTION_HELPERS:
            return super().find_class(module, name)
        if not _in_package(module, _ALLOWED_CLASS_PACKAGES):
            raise UnsafePickleError(
                module, name, "only scikit-learn, NumPy and SciPy classes are allowed"
            )
        if _in_package(module, _REFUSED_CLASS_MODULES) or name in _REFUSED_CLASS_NAMES:
            raise UnsafePickleError(module, name, "this class can reach files or native memory")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise UnsafePickleError(module, name, "no such class") from None
        if not isinstance(found, type):
            raise UnsafePickleError(module, name, "functions are not allowed, only classes")
        home = getattr(found, "__module__", "") or ""
        if not _in_package(home, _ALLOWED_CLASS_PACKAGES) or _in_package(
            home, _REFUSED_CLASS_MODULES
        ):
            raise UnsafePickleError(module, name, f"it is really {home}.{found.__name__}")
        return found


def loads(data: bytes) -> Any:
    """Unpickle ``data``, admitting only allow-listed globals."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def load_file(path: Path) -> Any:
    return loads(Path(path).read_bytes())
