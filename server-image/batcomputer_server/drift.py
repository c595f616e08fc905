"""Input drift: how far recent requests' inputs have moved from the training population.

For each input with a recorded reference distribution, a sliding window of the last
``window_rows`` values is binned like the reference and compared with it by the
population stability index, PSI = sum of (actual - expected) · ln(actual / expected) over the
bins (shares floored at 1e-4 so an empty bin counts as rare, not impossible). Read it as:

* PSI < 0.1: stable; 0.1 to 0.25: moderate shift, worth a look; > 0.25: significant shift,
  the model sees a population it was not trained on.

Values beyond the training minimum/maximum and labels the model never saw are counted
separately (the API refuses them; the counts say how often callers send them). Every
request's well-typed values are observed, refused or not: drift is about what callers
send. A large batch contributes an evenly spaced sample of at most ``rows_per_request``
rows, so observing never costs more than a fraction of scoring. Pure: the Prometheus side
is a ``DriftSink``; the window lives in each server process.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from batcomputer_bundle.reference import CategoricalReference, NumericReference, Reference

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
WINDOW_ROWS = 1000
MIN_ROWS = 100
ROWS_PER_REQUEST = 16
PUBLISH_INTERVAL_SECONDS = 1.0
PUBLISH_EVERY_ROWS = 100
_SHARE_FLOOR = 1e-4
_NUMBER_TYPES = (int, float)


class DriftSink(Protocol):
    def out_of_range(self, name: str, count: int) -> None: ...
    def unseen_category(self, name: str, count: int) -> None: ...
    def psi(self, name: str, value: float) -> None: ...


@runtime_checkable
class DecodedRows(Protocol):
    """A batch already decoded and checked, whose rows become objects only when asked."""

    def __len__(self) -> int: ...
    def objects(self, indexes: Sequence[int]) -> list[dict[str, Any]]: ...


def population_stability_index(expected: Sequence[float], counts: Sequence[int]) -> float:
    total = sum(counts)
    if total == 0:
        return 0.0
    index = 0.0
    for share, count in zip(expected, counts, strict=True):
        reference = max(share, _SHARE_FLOOR)
        actual = max(count / total, _SHARE_FLOOR)
        index += (actual - reference) * math.log(actual / reference)
    return index


def _sample_indexes(rows: int, rows_per_request: int) -> Sequence[int]:
    """The rows of a batch of ``rows`` that a request contributes: evenly spaced, at most
    ``rows_per_request``."""
    if rows <= rows_per_request:
        return range(rows)
    step = rows / rows_per_request
    return [int(i * step) for i in range(rows_per_request)]


def assessment(psi: float | None) -> str | None:
    if psi is None:
        return None
    if psi < PSI_MODERATE:
        return "stable"
    return "moderate" if psi <= PSI_SIGNIFICANT else "significant"


class _Window:
    """The last ``size`` bin numbers and how many of them fall in each bin."""

    def __init__(self, bins: int, size: int) -> None:
        self.counts = [0] * bins
        self._ring = [-1] * size
        self._next = 0
        self.filled = 0

    def extend(self, bin_numbers: list[int]) -> None:
        ring, counts, position, size = self._ring, self.counts, self._next, len(self._ring)
        for bin_number in bin_numbers:
            leaving = ring[position]
            if leaving >= 0:
                counts[leaving] -= 1
            else:
                self.filled += 1
            ring[position] = bin_number
            counts[bin_number] += 1
            position = position + 1 if position + 1 < size else 0
        self._next = position


@dataclass
class _InputState:
    reference: Reference
    window: _Window
    labels: Mapping[str, int] | None
    interior_edges: list[float]
    out_of_range: int = 0
    unseen_category: int = 0


class DriftMonitor:
    """Windows over the inputs that have a reference; ``observe_rows`` feeds them."""

    def __init__(
        self,
        references: Mapping[str, Reference],
        sink: DriftSink | None = None,
        *,
        window_rows: int = WINDOW_ROWS,
        min_rows: int = MIN_ROWS,
        rows_per_request: int = ROWS_PER_REQUEST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._states = {
            name: _InputState(
                reference,
                _Window(len(reference.frequencies), window_rows),
                {label: i for i, label in enumerate(reference.labels)}
                if isinstance(reference, CategoricalReference)
                else None,
                list(reference.edges[1:-1]) if isinstance(reference, NumericReference) else [],
            )
            for name, reference in references.items()
        }
        self._sink = sink
        self._min_rows = min_rows
        self._rows_per_request = rows_per_request
        self._clock = clock
        self._published_at = -math.inf
        self._published_any = False
        self._rows_since_publish = 0

    def observe_rows(self, rows: Any) -> None:
        """Input objects as callers sent them (one object, a list or ``DecodedRows``, of
        which only the sampled rows are made objects); junk is skipped."""
        if isinstance(rows, dict):
            rows = [rows]
        elif isinstance(rows, list):
            if len(rows) > self._rows_per_request:
                rows = [rows[i] for i in _sample_indexes(len(rows), self._rows_per_request)]
        elif isinstance(rows, DecodedRows):
            rows = rows.objects(_sample_indexes(len(rows), self._rows_per_request))
        else:
            return
        self._rows_since_publish += len(rows)
        for name, state in self._states.items():
            values = [row.get(name) for row in rows if type(row) is dict]
            if state.labels is not None:
                self._observe_labels(name, state, state.labels, values)
            else:
                self._observe_numbers(name, state, values)
        # Scores cost more than observing, so they are published every hundred rows or
        # every second, whichever comes first (and at once when the first window fills).
        now = self._clock()
        if (
            self._rows_since_publish >= PUBLISH_EVERY_ROWS
            or now - self._published_at >= PUBLISH_INTERVAL_SECONDS
            or not self._published_any
        ):
            self._published_at = now
            self._rows_since_publish = 0
            self._publish_psi()

    def _observe_labels(
        self, name: str, state: _InputState, labels: Mapping[str, int], values: list[Any]
    ) -> None:
        codes = [labels.get(value) for value in values if type(value) is str]
        unseen = codes.count(None)
        state.window.extend([code for code in codes if code is not None])
        if unseen:
            state.unseen_category += unseen
            if self._sink is not None:
                self._sink.unseen_category(name, unseen)

    def _observe_numbers(self, name: str, state: _InputState, values: list[Any]) -> None:
        reference = state.reference
        assert isinstance(reference, NumericReference)
        low, high, edges = reference.minimum, reference.maximum, state.interior_edges
        outside = 0
        bins = []
        for value in values:
            if type(value) not in _NUMBER_TYPES:
                continue
            try:
                number = float(value)
            except OverflowError:
                outside += 1
                continue
            if not math.isfinite(number):
                continue
            if number < low or number > high:
                outside += 1
            bins.append(bisect_right(edges, number))
        state.window.extend(bins)
        if outside:
            state.out_of_range += outside
            if self._sink is not None:
                self._sink.out_of_range(name, outside)

    def _psi(self, state: _InputState) -> float | None:
        if state.window.filled < self._min_rows:
            return None
        return population_stability_index(state.reference.frequencies, state.window.counts)

    def _publish_psi(self) -> None:
        if self._sink is None:
            return
        for name, state in self._states.items():
            value = self._psi(state)
            if value is not None:
                self._sink.psi(name, value)
                self._published_any = True

    def report(self) -> dict[str, Any]:
        """What ``/api/info`` shows: per input, this server process's window and counts."""
        inputs = {}
        for name, state in self._states.items():
            psi = self._psi(state)
            inputs[name] = {
                "psi": None if psi is None else round(psi, 6),
                "assessment": assessment(psi),
                "window_values": state.window.filled,
                "out_of_range": state.out_of_range,
                "unseen_category": state.unseen_category,
            }
        return {
            "thresholds": {"moderate": PSI_MODERATE, "significant": PSI_SIGNIFICANT},
            "min_window_values": self._min_rows,
            "inputs": inputs,
        }
