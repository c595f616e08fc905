"""Training configurations: one TOML file per model, one pipeline for all of them.

A configuration names the data source, the derived columns, the features (in the
model's column order) and their types, the target column and its grouping into
flags, the estimators with their parameters and the held-out split. The two shipped
models live in ``configs/``; any other file with the same keys trains a new model
without code changes. Every mistake is reported as ``<file>: <where>: <what>``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
FEATURE_TYPES = ("categorical", "number", "integer")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """The configuration is missing, unreadable or wrong; the message names the place."""


@dataclass(frozen=True)
class DataSource:
    description: str
    license: str
    files: tuple[str, ...]
    package: str | None = None
    version: str | None = None
    sha256: str | None = None
    base_dir: Path | None = None
    """For local files (no ``package``): the folder relative paths start from."""


@dataclass(frozen=True)
class Derived:
    name: str
    source: str
    regex: re.Pattern[str] | None = None
    mapping: Mapping[str, str] | None = None


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    column: str
    type: str
    values: tuple[str, ...] | None = None
    min_count: int = 1
    impute: str = "median"
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Target:
    column: str
    flags: Mapping[str, tuple[str, ...]]

    def flag_of(self) -> dict[str, int]:
        """Raw target value → class index (the flag's position)."""
        return {
            value: index for index, values in enumerate(self.flags.values()) for value in values
        }


@dataclass(frozen=True)
class EstimatorSpec:
    default: str
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    name: str
    description: str
    data: DataSource
    derived: tuple[Derived, ...]
    features: tuple[FeatureSpec, ...]
    target: Target
    estimator: EstimatorSpec
    test_size: float
    seed: int
    path: Path


def shipped_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def resolve(model_or_path: str) -> Path:
    """``crime``/``titanic`` → the shipped configuration; anything else is a path."""
    if model_or_path in shipped_models():
        return CONFIG_DIR / f"{model_or_path}.toml"
    path = Path(model_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in model_or_path:
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        return path
    raise ConfigError(
        f"unknown model {model_or_path!r}: use one of {', '.join(shipped_models())} "
        "or the path of a .toml configuration"
    )


def load(model_or_path: str | Path) -> Config:
    path = resolve(str(model_or_path))
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    return parse(document, path)


class _Reader:
    """Typed access to one table of the document, with errors naming the place."""

    def __init__(self, path: Path, where: str, table: Any) -> None:
        self.path, self.where = path, where
        if not isinstance(table, dict):
            self.fail(f"must be a table, got {type(table).__name__}")
        self.table: dict[str, Any] = table

    def fail(self, message: str) -> None:
        place = f"{self.where}: " if self.where else ""
        raise ConfigError(f"{self.path}: {place}{message}")

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = ..., what: str = ""
    ) -> Any:
        if key not in self.table:
            if default is ...:
                self.fail(f"lacks {key!r}{what}")
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            names = " or ".join(k.__name__ for k in _tuple(kind))
            self.fail(f"{key!r} must be {names}, got {value!r}")
        return value

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...] | None:
        value = self.get(key, list, default)
        if value is None or value is default:
            return value
        if not value or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{key!r} must be a non-empty list of non-empty strings")
        return tuple(value)

    def sub(self, key: str, default: Any = ...) -> _Reader:
        where = f"{self.where}.{key}" if self.where else f"[{key}]"
        return _Reader(self.path, where, self.get(key, dict, default))

    def reject_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.table) - known)
        if unknown:
            self.fail(f"unknown key(s) {', '.join(map(repr, unknown))}; known: {sorted(known)}")


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def parse(document: dict[str, Any], path: Path) -> Config:
    top = _Reader(path, "", document)
    top.reject_unknown(
        {"name", "description", "data", "derived", "features", "target", "estimator", "split"}
    )
    name = top.get("name", str)
    if not _NAME.match(name):
        top.fail(f"name {name!r} must be lowercase letters, digits and '-' (at most 40)")
    data = _data(top.sub("data"))
    derived = _derived(top, top.get("derived", dict, {}))
    features = _features(top, top.get("features", list))
    target = _target(top.sub("target"))
    estimator = _estimator(top.sub("estimator"))
    split = top.sub("split", {})
    split.reject_unknown({"test_size", "seed"})
    test_size = float(split.get("test_size", (int, float), 0.25))
    if not 0.05 <= test_size <= 0.5:
        split.fail(f"test_size must lie between 0.05 and 0.5, got {test_size}")
    seed = split.get("seed", int, 42)
    for feature in features:
        if feature.column == target.column:
            top.fail(f"feature {feature.name!r} reads the target column {target.column!r}")
    return Config(
        name=name,
        description=top.get("description", str, name),
        data=data,
        derived=derived,
        features=features,
        target=target,
        estimator=estimator,
        test_size=test_size,
        seed=seed,
        path=path,
    )


def _data(section: _Reader) -> DataSource:
    section.reject_unknown({"description", "license", "package", "version", "sha256", "files"})
    files = section.strings("files")
    package = section.get("package", str, None)
    version = section.get("version", str, None)
    if (package is None) != (version is None):
        section.fail(
            "give both 'package' and 'version' (a wheel on PyPI), or neither (local files)"
        )
    return DataSource(
        description=section.get("description", str),
        license=section.get("license", str),
        files=files,
        package=package,
        version=version,
        sha256=section.get("sha256", str, None),
        base_dir=None if package else section.path.parent,
    )


def _derived(top: _Reader, table: dict[str, Any]) -> tuple[Derived, ...]:
    result = []
    for name, spec in table.items():
        section = _Reader(top.path, f"[derived.{name}]", spec)
        section.reject_unknown({"from", "regex", "map"})
        source = section.get("from", str)
        regex, mapping = section.get("regex", str, None), section.get("map", dict, None)
        if (regex is None) == (mapping is None):
            section.fail("give exactly one of 'regex' (one capture group) or 'map'")
        compiled = None
        if regex is not None:
            try:
                compiled = re.compile(regex)
            except re.error as error:
                section.fail(f"'regex' does not compile: {error}")
            if compiled is not None and compiled.groups != 1:
                section.fail(f"'regex' must have exactly one capture group, has {compiled.groups}")
        if mapping is not None and not all(isinstance(v, str) for v in mapping.values()):
            section.fail("'map' must map raw values to string labels")
        result.append(Derived(name=name, source=source, regex=compiled, mapping=mapping))
    return tuple(result)


def _features(top: _Reader, items: list[Any]) -> tuple[FeatureSpec, ...]:
    if not items:
        top.fail("'features' must list at least one [[features]] entry")
    result: list[FeatureSpec] = []
    for index, item in enumerate(items):
        section = _Reader(top.path, f"features[{index}]", item)
        section.reject_unknown(
            {"name", "column", "type", "values", "min_count", "impute", "minimum", "maximum"}
        )
        name = section.get("name", str)
        section.where = f"feature {name!r}"
        if not _FEATURE_NAME.match(name):
            section.fail("name must be a letter or '_' followed by letters, digits or '_'")
        if any(f.name == name for f in result):
            section.fail("is listed twice")
        kind = section.get("type", str)
        if kind not in FEATURE_TYPES:
            section.fail(f"type must be one of {', '.join(FEATURE_TYPES)}, got {kind!r}")
        categorical_only = {"values", "min_count"} & set(section.table)
        numeric_only = {"impute", "minimum", "maximum"} & set(section.table)
        if kind == "categorical" and numeric_only:
            section.fail(f"{sorted(numeric_only)} apply to numeric features only")
        if kind != "categorical" and categorical_only:
            section.fail(f"{sorted(categorical_only)} apply to categorical features only")
        impute = section.get("impute", str, "median")
        if impute not in ("median", "drop"):
            section.fail(f"impute must be 'median' or 'drop', got {impute!r}")
        values = section.strings("values", None)
        if values is not None and len(set(values)) != len(values):
            section.fail("'values' lists a label twice")
        minimum = section.get("minimum", (int, float), None)
        maximum = section.get("maximum", (int, float), None)
        if minimum is not None and maximum is not None and minimum > maximum:
            section.fail(f"minimum {minimum} exceeds maximum {maximum}")
        min_count = section.get("min_count", int, 1)
        if min_count < 1:
            section.fail("min_count must be at least 1")
        result.append(
            FeatureSpec(
                name=name,
                column=section.get("column", str, name),
                type=kind,
                values=values,
                min_count=min_count,
                impute=impute,
                minimum=None if minimum is None else float(minimum),
                maximum=None if maximum is None else float(maximum),
            )
        )
    return tuple(result)


def _target(section: _Reader) -> Target:
    section.reject_unknown({"column", "flags"})
    column = section.get("column", str)
    flags_table = section.sub("flags")
    if len(flags_table.table) < 2:
        flags_table.fail("needs at least two flags (the model's classes)")
    flags: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for flag in flags_table.table:
        if not flag.strip():
            flags_table.fail("a flag label must not be empty")
        values = flags_table.strings(flag)
        assert values is not None
        for value in values:
            if value in owner:
                flags_table.fail(f"{value!r} is grouped under both {owner[value]!r} and {flag!r}")
            owner[value] = flag
        flags[flag] = values
    return Target(column=column, flags=flags)


def _estimator(section: _Reader) -> EstimatorSpec:
    section.reject_unknown({"default", "params"})
    params = section.get("params", dict, {})
    for estimator, table in params.items():
        if not isinstance(table, dict):
            section.fail(f"params.{estimator} must be a table of parameter = value")
    return EstimatorSpec(default=section.get("default", str), params=params)
