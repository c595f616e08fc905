"""The model bundle format: what training writes and what the server and fetcher read.

A bundle is a folder holding ``model.pkl``, ``lookup.pkl``, ``flags.pkl``, an optional
``model.onnx`` and ``bundle.json``. This module knows the feature schema, the digests
and the manifest; it never unpickles anything (see ``safe_pickle``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Callers reading a bundle name its files through this module.
from batcomputer_bundle.names import (  # noqa: F401
    BUNDLE_FILES,
    DIGEST_PREFIX,
    FLAGS_FILE,
    FORMAT,
    LOOKUP_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    ONNX_FILE,
    PICKLE_FILES,
)

_REQUIRED_MANIFEST_KEYS = (
    "name",
    "version",
    "created_at",
    "features",
    "flags",
    "files",
    "schema_digest",
)
_CHUNK = 1 << 20
# Far above any real manifest (the self-check rows are its bulk: ~100 KiB), low enough
# that a hostile one cannot exhaust a reader's memory.
MAX_MANIFEST_BYTES = 8 << 20


class BundleError(Exception):
    """The bundle is incomplete, inconsistent or tampered with; the message says how."""


class BundleDigestError(BundleError):
    """``bundle.json`` is not the one the bundle digest pins."""


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    codes: Mapping[str, int]

    @property
    def type(self) -> Literal["categorical"]:
        return "categorical"

    @property
    def values(self) -> list[str]:
        """Labels in code order, which is the order people saw them in at training time."""
        return sorted(self.codes, key=self.codes.__getitem__)


@dataclass(frozen=True)
class NumericFeature:
    name: str
    type: Literal["number", "integer"] = "number"
    minimum: float | None = None
    maximum: float | None = None


Feature = CategoricalFeature | NumericFeature


def _categorical_from_lookup(name: str, entry: Mapping[Any, Any]) -> CategoricalFeature:
    for label, code in entry.items():
        if not isinstance(label, str) or isinstance(code, bool) or not isinstance(code, int):
            raise BundleError(
                f"lookup entry {name!r} must map string labels to integer codes, "
                f"found {label!r}: {code!r}"
            )
    if len(set(entry.values())) != len(entry):
        raise BundleError(f"lookup entry {name!r} gives two labels the same code")
    if not entry:
        raise BundleError(f"lookup entry {name!r} has no labels")
    return CategoricalFeature(name=name, codes=dict(entry))


def _numeric_from_lookup(name: str, entry: Mapping[Any, Any]) -> NumericFeature:
    kind = entry.get("type")
    if kind not in ("number", "integer"):
        raise BundleError(
            f"lookup entry {name!r}: numeric entries need type 'number' or 'integer', got {kind!r}"
        )
    minimum, maximum = entry.get("minimum"), entry.get("maximum")
    for bound in (minimum, maximum):
        if bound is not None and not (isinstance(bound, int | float) and math.isfinite(bound)):
            raise BundleError(f"lookup entry {name!r}: bounds must be finite numbers")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise BundleError(f"lookup entry {name!r}: minimum {minimum} exceeds maximum {maximum}")
    return NumericFeature(
        name=name,
        type=kind,
        minimum=None if minimum is None else float(minimum),
        maximum=None if maximum is None else float(maximum),
    )


def _is_numeric_entry(entry: Mapping[Any, Any]) -> bool:
    # A categorical entry's values are all integer codes, so a string under "type"
    # can only mean a numeric entry.
    return isinstance(entry.get("type"), str)


def features_from_lookup(
    lookup: Mapping[str, Any], feature_order: Sequence[str] | None = None
) -> tuple[Feature, ...]:
    """The model's features, in the model's column order.

    A full lookup lists every feature in order. A seed-style lookup lists only the
    categorical ones; ``feature_order`` (the model's ``feature_names_in_`` or the
    manifest's feature names) then supplies the order, and names missing from the
    lookup are unbounded numbers.
    """
    if not isinstance(lookup, Mapping):
        raise BundleError(f"lookup must be a dict of feature name to entry, got {type(lookup)}")
    parsed: dict[str, Feature] = {}
    for name, entry in lookup.items():
        if not isinstance(name, str) or not isinstance(entry, Mapping):
            raise BundleError(f"lookup entry {name!r} must be a dict keyed by a feature name")
        parsed[name] = (
            _numeric_from_lookup(name, entry)
            if _is_numeric_entry(entry)
            else _categorical_from_lookup(name, entry)
        )
    if feature_order is None or list(feature_order) == list(parsed):
        return tuple(parsed.values())
    unknown = [name for name in parsed if name not in feature_order]
    if unknown:
        raise BundleError(f"lookup names features the model does not have: {unknown}")
    return tuple(parsed.get(name) or NumericFeature(name=name) for name in feature_order)


def lookup_from_features(features: Sequence[Feature]) -> dict[str, dict[str, Any]]:
    """The full-style ``lookup.pkl`` content for a feature schema."""
    lookup: dict[str, dict[str, Any]] = {}
    for feature in features:
        if isinstance(feature, CategoricalFeature):
            lookup[feature.name] = dict(feature.codes)
        else:
            lookup[feature.name] = {
                "type": feature.type,
                "minimum": feature.minimum,
                "maximum": feature.maximum,
            }
    return lookup


def feature_to_json(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, CategoricalFeature):
        return {"name": feature.name, "type": "categorical", "values": feature.values}
    return {
        "name": feature.name,
        "type": feature.type,
        "minimum": feature.minimum,
        "maximum": feature.maximum,
    }


def schema_digest(features: Sequence[Feature], flags: Sequence[str]) -> str:
    """A digest of the scoring API: it changes exactly when a MAJOR version bump is due."""
    canonical = json.dumps(
        {"features": [feature_to_json(f) for f in features], "flags": list(flags)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ``files`` section of a manifest: sha256 and size of each named file."""
    return {
        name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
        for name in names
    }


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``bundle.json`` atomically so a reader never sees half a manifest."""
    target = folder / MANIFEST_FILE
    partial = folder / (MANIFEST_FILE + ".partial")
    partial.write_text(json.dumps({"format": FORMAT, **manifest}, indent=2, sort_keys=False))
    os.replace(partial, target)
    return target


def parse_manifest(text: str | bytes) -> dict[str, Any]:
    """Parse and sanity-check ``bundle.json`` content; any hostile shape is a BundleError."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_FILE} exceeds {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(text)
    except ValueError as error:
        raise BundleError(f"{MANIFEST_FILE} is not valid JSON: {error}") from None
    except RecursionError:
        raise BundleError(f"{MANIFEST_FILE} is nested too deeply") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_FILE} must hold a JSON object")
    shape = manifest.get("format")
    if shape != FORMAT:
        shown = repr(shape[:80]) if isinstance(shape, str) else type(shape).__name__
        raise BundleError(f"{MANIFEST_FILE} has format {shown}; this server reads {FORMAT!r}")
    missing = [key for key in _REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{MANIFEST_FILE} lacks {', '.join(missing)}")
    for key, kind in _MANIFEST_TYPES:
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise BundleError(f"{MANIFEST_FILE}: {key} must be {_KIND_NAMES[kind]}")
    if not manifest["name"] or not manifest["version"]:
        raise BundleError(f"{MANIFEST_FILE}: name and version must not be empty")
    _check_files(manifest["files"])
    return manifest


_MANIFEST_TYPES = (
    ("name", str),
    ("version", str),
    ("features", list),
    ("flags", list),
    ("files", dict),
    ("schema_digest", str),
)
_KIND_NAMES = {str: "a string", list: "a list", dict: "an object"}


def _check_files(files: Mapping[str, Any]) -> None:
    """Only the bundle's own file names, each with a sha256 (and a size when given)."""
    for name, entry in files.items():
        if name not in BUNDLE_FILES:
            raise BundleError(
                f"{MANIFEST_FILE} lists {name!r:.80}, which is not a bundle file; "
                f"allowed: {', '.join(BUNDLE_FILES)}"
            )
        if not isinstance(entry, dict) or not is_sha256_hex(entry.get("sha256")):
            raise BundleError(f"{MANIFEST_FILE} gives no valid sha256 for {name}")
        size = entry.get("bytes", 0)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BundleError(f"{MANIFEST_FILE}: bytes of {name} must be a non-negative integer")
    absent = [name for name in PICKLE_FILES if name not in files]
    if absent:
        raise BundleError(f"{MANIFEST_FILE} does not list {', '.join(absent)}")


def read_manifest(folder: Path, digest: str | None = None) -> dict[str, Any]:
    """``bundle.json`` of a folder, checked against the bundle digest when one is given."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{MANIFEST_FILE} not found in {folder}")
    content = path.read_bytes()
    if digest is not None:
        check_bundle_digest(content, digest)
    return parse_manifest(content)


def bundle_digest(manifest_bytes: bytes) -> str:
    """The bundle digest: ``sha256:<hex>`` of ``bundle.json``'s exact bytes."""
    return DIGEST_PREFIX + hashlib.sha256(manifest_bytes).hexdigest()


def is_bundle_digest(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(DIGEST_PREFIX)
        and is_sha256_hex(value.removeprefix(DIGEST_PREFIX))
    )


def check_bundle_digest(manifest_bytes: bytes, digest: str) -> None:
    """Raise BundleDigestError unless ``bundle.json``'s bytes have the pinned digest."""
    actual = bundle_digest(manifest_bytes)
    if actual != digest:
        raise BundleDigestError(
            f"sha256 mismatch for {MANIFEST_FILE}: the bundle digest is {actual}, "
            f"the pin says {digest}"
        )


def is_sha256_hex(value: object) -> bool:
    """A sha256 digest as this project writes it: 64 lower-case hex digits."""
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def expected_digests(manifest: Mapping[str, Any], pinned: Mapping[str, str]) -> dict[str, str]:
    """Digest each file must have: the manifest's, which must agree with every pinned one."""
    expected = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    for name, digest in pinned.items():
        if name not in expected:
            raise BundleError(f"pinned file {name} is not part of the bundle")
        if expected[name] != digest.lower():
            raise BundleError(f"sha256 mismatch for {name}: {MANIFEST_FILE} disagrees with the pin")
    return expected


def verify_folder(
    folder: Path, pinned: Mapping[str, str] | None = None, digest: str | None = None
) -> dict[str, Any]:
    """Check every file of a bundle folder against its manifest (and pins); return the manifest.

    With ``digest`` (the bundle digest), ``bundle.json`` itself is checked first, so nothing
    is trusted that the digest does not cover.
    """
    manifest = read_manifest(folder, digest)
    for name, file_digest in expected_digests(manifest, pinned or {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{name} is missing from {folder}")
        if sha256_file(path) != file_digest:
            raise BundleError(f"sha256 mismatch for {name}")
    return manifest
