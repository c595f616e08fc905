"""Rollout analysis from the model pods' own Prometheus metrics, as pure functions.

The operator scrapes each pod's /metrics at the start of a step and again at each
analysis; what a version did over the step is the difference between the two scrapes,
summed over its pods (a pod whose counters went down restarted in between: its second
scrape is all it did). From that difference:

* Canary, on the new version's pods: requests to /api/predict, the 5xx among them, and
  the 99th percentile of their answer time from the latency histogram's buckets
  (interpolated within a bucket as Prometheus' histogram_quantile does);
* Shadow, on the serving version's pods, which compare the copies they send: copies
  sent, the failed ones, the shadow's answer-time p99, and per flag the mean |Δp| (the
  histogram's sum over its count); the disagreement is the worst flag's mean.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from batcomputer_operator.rollout import Measurement

PREDICT_ROUTE = "/api/predict"
_REQUESTS = "batcomputer_http_requests_total"
_LATENCY = "batcomputer_http_request_duration_seconds_bucket"
_SHADOW_REQUESTS = "batcomputer_shadow_requests_total"
_SHADOW_LATENCY = "batcomputer_shadow_request_duration_seconds_bucket"
_SHADOW_DELTA_SUM = "batcomputer_shadow_probability_delta_sum"
_SHADOW_DELTA_COUNT = "batcomputer_shadow_probability_delta_count"
_SHADOW_ROWS = "batcomputer_shadow_rows_total"

_CUMULATIVE = ("_total", "_bucket", "_count", "_sum")

Labels = frozenset[tuple[str, str]]


class MetricsError(ValueError):
    """A pod's /metrics text could not be read."""


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape: (sample name, labels) → value."""

    samples: Mapping[tuple[str, Labels], float]

    def select(self, name: str, **labels: str) -> dict[Labels, float]:
        wanted = set(labels.items())
        return {
            sample_labels: value
            for (sample_name, sample_labels), value in self.samples.items()
            if sample_name == name and wanted <= sample_labels
        }

    def total(self, name: str, **labels: str) -> float:
        return sum(self.select(name, **labels).values())


def parse(text: str) -> Scrape:
    """A /metrics page in the Prometheus text format."""
    samples: dict[tuple[str, Labels], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                samples[key] = samples.get(key, 0.0) + float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as error:
        raise MetricsError(f"not Prometheus text: {error}") from None
    return Scrape(samples)


def growth(before: Scrape | None, after: Scrape) -> Scrape:
    """What one pod counted between two scrapes, counters and histograms only (all it
    counted by `after` when it is new or restarted: a counter went down)."""
    counted = {key: value for key, value in after.samples.items() if key[0].endswith(_CUMULATIVE)}
    for (name, _), value in counted.items():
        # A NaN would pass every threshold (every comparison with it is false).
        if not math.isfinite(value) or value < 0:
            raise MetricsError(f"{name} is {value}, not a count")
    if before is None or any(
        value < before.samples.get(key, 0.0) for key, value in counted.items()
    ):
        return Scrape(counted)
    return Scrape({key: value - before.samples.get(key, 0.0) for key, value in counted.items()})


def combined(scrapes: Iterable[Scrape]) -> Scrape:
    """The sum of several pods' growths."""
    samples: dict[tuple[str, Labels], float] = {}
    for scrape in scrapes:
        for key, value in scrape.samples.items():
            samples[key] = samples.get(key, 0.0) + value
    return Scrape(samples)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative histogram `buckets` (upper bound → count), None when
    empty. Linear within the bucket it falls in; in the +Inf bucket, the highest finite
    bound (what Prometheus' histogram_quantile answers)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _buckets(scrape: Scrape, name: str, **labels: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for sample_labels, value in scrape.select(name, **labels).items():
        bound = float(dict(sample_labels)["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def canary_measurement(grown: Scrape) -> Measurement:
    """The new version's own predictions, from its pods' growth."""
    answered = grown.select(_REQUESTS, route=PREDICT_ROUTE)
    errors = sum(value for labels, value in answered.items() if _server_error(labels))
    return Measurement(
        requests=round(sum(answered.values())),
        errors=round(errors),
        p99_seconds=quantile(0.99, _buckets(grown, _LATENCY, route=PREDICT_ROUTE)),
    )


def _server_error(labels: Labels) -> bool:
    status = dict(labels).get("status", "")
    return status.isdigit() and int(status) >= 500


@dataclass(frozen=True)
class Disagreement:
    mean_by_flag: dict[str, float]  # mean |Δp| per flag
    top_flag_changed: float | None  # share of rows whose most likely flag changed

    @property
    def worst(self) -> float | None:
        return max(self.mean_by_flag.values(), default=None)


def disagreement(grown: Scrape) -> Disagreement:
    sums = grown.select(_SHADOW_DELTA_SUM)
    counts = {
        dict(labels)["flag"]: value for labels, value in grown.select(_SHADOW_DELTA_COUNT).items()
    }
    means = {
        flag: value / counts[flag]
        for labels, value in sums.items()
        if counts.get(flag := dict(labels)["flag"], 0) > 0
    }
    changed = grown.total(_SHADOW_ROWS, top_flag="changed")
    rows = changed + grown.total(_SHADOW_ROWS, top_flag="same")
    return Disagreement(means, changed / rows if rows else None)


def shadow_measurement(grown: Scrape) -> Measurement:
    """The copies the serving version's pods sent to the shadow and what they found."""
    compared = grown.total(_SHADOW_REQUESTS, outcome="compared")
    failed = grown.total(_SHADOW_REQUESTS, outcome="error")
    return Measurement(
        requests=round(compared + failed),
        errors=round(failed),
        p99_seconds=quantile(0.99, _buckets(grown, _SHADOW_LATENCY)),
        disagreement=disagreement(grown).worst,
    )


class Baselines:
    """Each pod's first scrape in a step, so a measurement covers that step only.

    Held in the operator's memory: after a restart the step's analysis starts again
    from the pods' next scrape, which can only make it wait longer, never pass early.
    A pod first seen during a step counts from its first scrape.
    """

    def __init__(self) -> None:
        self._steps: dict[str, tuple[Any, dict[str, Scrape]]] = {}
        self._counting_since: dict[str, str] = {}

    def measure(self, model: str, step: Any, scrapes: Mapping[str, Scrape]) -> Scrape:
        """What the pods in `scrapes` (pod uid → scrape) counted since their first scrape
        in `step` of `model`'s rollout (any value that changes when the step does)."""
        seen_step, first = self._steps.get(model, (None, {}))
        if seen_step != step:
            first = {}
            self._steps[model] = (step, first)
            self._counting_since.pop(model, None)
        for pod, scrape in scrapes.items():
            first.setdefault(pod, scrape)
        return combined(growth(first[pod], scrape) for pod, scrape in scrapes.items())

    def counting_since(self, model: str, counted: bool, now: str) -> str | None:
        """When the measurements of `model`'s current step first `counted` something:
        `now` the first time they do, None until then."""
        if counted:
            return self._counting_since.setdefault(model, now)
        return self._counting_since.get(model)

    def forget(self, model: str) -> None:
        self._steps.pop(model, None)
        self._counting_since.pop(model, None)
