"""What is published: one entry per ``<model>/<version>/bundle.json`` in a blob container.

Pure: the caller lists the blobs and reads the manifests; this module turns their bytes
into entries and renders them. A manifest that is not JSON, holds the wrong types or is
too large becomes an entry carrying a ``problem`` instead of stopping the listing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import semver

from batcomputer_bundle.names import DIGEST_PREFIX, MANIFEST_FILE

# A real manifest is tens of kilobytes (its self-check rows dominate); far more is not one.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_TABLE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "macro_f1", "log_loss")


@dataclass(frozen=True)
class ManifestBlob:
    """A ``bundle.json`` found in the listing, relative to the container folder."""

    model: str
    version: str
    size: int
    published_at: datetime


@dataclass(frozen=True)
class ListedVersion:
    model: str
    version: str
    published_at: datetime
    bundle_digest: str | None = None
    schema_digest: str | None = None
    created_at: str | None = None
    estimator: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "bundle_digest": self.bundle_digest,
            "schema_digest": self.schema_digest,
            "created_at": self.created_at,
            "published_at": self.published_at.isoformat(),
            "estimator": self.estimator,
            "metrics": self.metrics,
            "problem": self.problem,
        }


def manifest_blobs(names: Iterable[tuple[str, int, datetime]]) -> list[ManifestBlob]:
    """The ``<model>/<version>/bundle.json`` blobs among (name, size, last modified)."""
    found = []
    for name, size, modified in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST_FILE and parts[0] and parts[1]:
            found.append(ManifestBlob(parts[0], parts[1], size, modified))
    return found


def too_large(blob: ManifestBlob) -> ListedVersion:
    return ListedVersion(
        blob.model,
        blob.version,
        blob.published_at,
        problem=f"{MANIFEST_FILE} is {blob.size} bytes, more than the "
        f"{MAX_MANIFEST_BYTES} a bundle manifest may be; not read",
    )


def describe(blob: ManifestBlob, content: bytes) -> ListedVersion:
    """One published version from its manifest's bytes; never raises on their content."""
    base = ListedVersion(
        blob.model,
        blob.version,
        blob.published_at,
        bundle_digest=DIGEST_PREFIX + hashlib.sha256(content).hexdigest(),
    )
    if len(content) > MAX_MANIFEST_BYTES:
        return replace(base, problem=too_large(blob).problem)
    try:
        manifest = json.loads(content)
    except (ValueError, RecursionError) as error:
        return replace(base, problem=f"{MANIFEST_FILE} is not valid JSON: {error}")
    if not isinstance(manifest, dict):
        return replace(base, problem=f"{MANIFEST_FILE} must hold a JSON object")
    schema_digest = manifest.get("schema_digest")
    created_at = manifest.get("created_at")
    estimator = manifest.get("estimator")
    listed = ListedVersion(
        blob.model,
        blob.version,
        blob.published_at,
        bundle_digest=base.bundle_digest,
        schema_digest=schema_digest if isinstance(schema_digest, str) else None,
        created_at=created_at if isinstance(created_at, str) else None,
        estimator=estimator if isinstance(estimator, str) else None,
        metrics=_numeric_metrics(manifest.get("metrics")),
    )
    problem = _problem(blob, manifest)
    return replace(listed, problem=problem) if problem else listed


def _numeric_metrics(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {
        str(name): value
        for name, value in metrics.items()
        if type(value) in (int, float) and math.isfinite(value)
    }


def _problem(blob: ManifestBlob, manifest: Mapping[str, Any]) -> str | None:
    expected = {"name": blob.model, "version": blob.version}
    for key, folder_value in expected.items():
        value = manifest.get(key)
        if not isinstance(value, str):
            return f"{MANIFEST_FILE} has no {key} string"
        if value != folder_value:
            return f"{MANIFEST_FILE} names {key} {value!r} but sits in folder {folder_value!r}"
    if not isinstance(manifest.get("schema_digest"), str):
        return f"{MANIFEST_FILE} has no schema_digest string"
    if not isinstance(manifest.get("metrics"), dict):
        return f"{MANIFEST_FILE} has no metrics object"
    if not semver.Version.is_valid(blob.version):
        return f"version {blob.version!r} is not SemVer"
    return None


def ordered(entries: Iterable[ListedVersion]) -> list[ListedVersion]:
    """By model, then by SemVer (newest last); folders that are not SemVer sort first."""

    def key(entry: ListedVersion) -> tuple[str, int, Any, str]:
        if semver.Version.is_valid(entry.version):
            return (entry.model, 1, semver.Version.parse(entry.version), entry.version)
        return (entry.model, 0, semver.Version(0), entry.version)

    return sorted(entries, key=key)


def render_json(entries: Sequence[ListedVersion]) -> str:
    return json.dumps([entry.to_json() for entry in entries], indent=2) + "\n"


def render_table(entries: Sequence[ListedVersion]) -> str:
    """Aligned columns; digests shortened to 12 hex digits, problems on their own line."""
    header = ["MODEL", "VERSION", "PUBLISHED", "BUNDLE", "SCHEMA", "METRICS"]
    rows = [header]
    problems: list[tuple[int, str]] = []
    for entry in entries:
        rows.append(
            [
                entry.model,
                entry.version,
                entry.published_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                _short(entry.bundle_digest),
                _short(entry.schema_digest),
                _metrics_text(entry.metrics),
            ]
        )
        if entry.problem:
            problems.append((len(rows) - 1, entry.problem))
    widths = [max(len(_printable(row[i])) for row in rows) for i in range(len(header) - 1)]
    notes = dict(problems)
    lines = []
    for index, row in enumerate(rows):
        cells = [_printable(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, _printable(row[-1])]).rstrip())
        if index in notes:
            lines.append(f"  ! {_printable(notes[index])}")
    return "\n".join(lines) + "\n"


def _short(digest: str | None) -> str:
    if not digest:
        return "-"
    algorithm, _, hex_digits = digest.partition(":")
    return f"{algorithm}:{hex_digits[:12]}" if hex_digits else digest[:19]


def _metrics_text(metrics: Mapping[str, float]) -> str:
    shown = [f"{name}={metrics[name]:.3f}" for name in _TABLE_METRICS if name in metrics]
    return " ".join(shown) or "-"


def _printable(text: str) -> str:
    # Names come from blob paths and manifests a stranger may have written.
    return "".join(c if c.isprintable() else "?" for c in text)[:200]
