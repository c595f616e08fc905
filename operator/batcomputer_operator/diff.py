"""Pure comparison of a desired manifest with the live object: whether a write is due."""

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any


def differs(desired: Any, live: Any, path: str = "") -> bool:
    """Whether a live object lacks something the desired manifest sets.

    Fields the API server defaults (or other managers own) are ignored: only what
    `desired` names is compared. Lists must match in length, because a shorter
    desired list (an env var or argument removed) is a change too; that is why
    the builders spell out empty lists, which the API server then omits.
    """
    if live is None and isinstance(desired, Mapping | list) and not desired:
        return False
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return True
        return any(differs(value, live.get(key), f"{path}.{key}") for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return True
        return any(differs(d, v, path) for d, v in zip(desired, live, strict=True))
    if ".resources." in path and desired is not None and live is not None:
        return _quantity(desired) != _quantity(live)
    return desired != live


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (n + 1) for n, p in enumerate("KMGTPE")},
}


def _quantity(value: Any) -> Any:
    """A Kubernetes quantity as a number, since the API server rewrites 0.5 as 500m."""
    match = _QUANTITY.match(str(value))
    if not match:
        return value
    number, suffix = match.groups()
    try:
        if suffix and suffix[0] in "eE":
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix or ""]
    except InvalidOperation:
        return value


def canonical(value: Any, path: str = "") -> Any:
    """`value` with quantities by value, as `differs` compares them (0.5 is 500m): what a
    digest of a manifest is taken of."""
    if isinstance(value, Mapping):
        return {key: canonical(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [canonical(item, path) for item in value]
    if ".resources." in path:
        quantity = _quantity(value)
        return str(quantity.normalize()) if isinstance(quantity, Decimal) else value
    return value
