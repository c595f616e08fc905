"""Each input's distribution over the training rows, as ``bundle.json`` records it.

Training writes it under ``reference_distributions``; the server compares recent requests
with it (population stability index). A categorical input keeps the share of every label;
a numeric one keeps bin edges (training deciles, so each bin starts out holding about a
tenth of the rows) and the share of rows in each bin. The outermost edges are the training
minimum and maximum; a value beyond them counts as outside the training range.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batcomputer_bundle.bundle import BundleError, CategoricalFeature, Feature

MANIFEST_KEY = "reference_distributions"
NUMERIC_BINS = 10


@dataclass(frozen=True)
class CategoricalReference:
    name: str
    labels: tuple[str, ...]
    frequencies: tuple[float, ...]


@dataclass(frozen=True)
class NumericReference:
    name: str
    edges: tuple[float, ...]
    """Ascending; ``len(edges) - 1`` bins, the first and last open towards -inf and +inf."""
    frequencies: tuple[float, ...]

    @property
    def minimum(self) -> float:
        return self.edges[0]

    @property
    def maximum(self) -> float:
        return self.edges[-1]


Reference = CategoricalReference | NumericReference


def from_training(features: Sequence[Feature], matrix: np.ndarray) -> dict[str, Any]:
    """The ``reference_distributions`` value for the encoded training matrix."""
    inputs: dict[str, Any] = {}
    for index, feature in enumerate(features):
        column = matrix[:, index]
        if isinstance(feature, CategoricalFeature):
            counts = np.bincount(column.astype(np.int64), minlength=len(feature.values))
            shares = counts / max(len(column), 1)
            inputs[feature.name] = {
                "type": "categorical",
                "frequencies": {
                    label: float(shares[feature.codes[label]]) for label in feature.values
                },
            }
            continue
        edges = _edges(column)
        inputs[feature.name] = {
            "type": "numeric",
            "edges": [float(edge) for edge in edges],
            "frequencies": [float(share) for share in _bin_shares(edges, column)],
        }
    return {"rows": len(matrix), "bins": NUMERIC_BINS, "inputs": inputs}


def _edges(column: np.ndarray) -> np.ndarray:
    """Decile edges; a column of few distinct values (counts, say) gets one edge per value."""
    distinct = np.unique(column)
    if len(distinct) == 1:  # a constant column: one bin around its single value
        return np.array([distinct[0], distinct[0]])
    if len(distinct) <= NUMERIC_BINS + 1:
        return distinct
    return np.unique(np.quantile(column, np.linspace(0.0, 1.0, NUMERIC_BINS + 1)))


def _bin_shares(edges: np.ndarray, column: np.ndarray) -> np.ndarray:
    bins = np.searchsorted(edges[1:-1], column, side="right")
    counts = np.bincount(bins, minlength=len(edges) - 1)
    return counts / max(len(column), 1)


def parse(manifest: Mapping[str, Any], features: Sequence[Feature]) -> dict[str, Reference]:
    """The references of a manifest for the model's inputs; ``{}`` when it records none."""
    section = manifest.get(MANIFEST_KEY)
    if section is None:
        return {}
    inputs = section.get("inputs") if isinstance(section, dict) else None
    if not isinstance(inputs, dict):
        raise BundleError(f"{MANIFEST_KEY} must hold an 'inputs' object")
    references: dict[str, Reference] = {}
    for feature in features:
        entry = inputs.get(feature.name)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise BundleError(f"{MANIFEST_KEY} for {feature.name!r} must be an object")
        references[feature.name] = (
            _categorical(feature, entry)
            if isinstance(feature, CategoricalFeature)
            else _numeric(feature.name, entry)
        )
    return references


def _shares(name: str, values: Any) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise BundleError(f"{MANIFEST_KEY} for {name!r} needs a list of frequencies")
    if not all(type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in values):
        raise BundleError(f"{MANIFEST_KEY} for {name!r}: frequencies must be numbers >= 0")
    return tuple(float(v) for v in values)


def _categorical(feature: CategoricalFeature, entry: Mapping[str, Any]) -> CategoricalReference:
    frequencies = entry.get("frequencies")
    if not isinstance(frequencies, dict) or list(frequencies) != list(feature.values):
        raise BundleError(
            f"{MANIFEST_KEY} for {feature.name!r} must give a frequency for each of its labels"
        )
    shares = _shares(feature.name, list(frequencies.values()))
    return CategoricalReference(feature.name, tuple(feature.values), shares)


def _numeric(name: str, entry: Mapping[str, Any]) -> NumericReference:
    edges = entry.get("edges")
    if (
        not isinstance(edges, list)
        or len(edges) < 2
        or not all(type(e) in (int, float) and math.isfinite(e) for e in edges)
        or any(b < a for a, b in itertools.pairwise(edges))
    ):
        raise BundleError(f"{MANIFEST_KEY} for {name!r} needs ascending finite bin edges")
    shares = _shares(name, entry.get("frequencies"))
    if len(shares) != len(edges) - 1:
        raise BundleError(f"{MANIFEST_KEY} for {name!r} needs one frequency per bin")
    return NumericReference(name, tuple(float(e) for e in edges), shares)
