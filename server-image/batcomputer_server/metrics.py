"""Prometheus metrics, shared across gunicorn workers through multiprocess mode.

prometheus_client picks its value storage when it is imported: ``server_cli`` sets
``PROMETHEUS_MULTIPROC_DIR`` before anything imports this module, so every worker
writes its samples to files there and ``/metrics`` on any worker reports them all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DELTA_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The server's metrics, registered on a registry of their own."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "batcomputer_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "method", "status"],
            registry=self._registry,
        )
        self.latency = Histogram(
            "batcomputer_http_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self._registry,
        )
        self.predicted_rows = Counter(
            "batcomputer_predicted_rows",
            "Input rows scored (a batch counts each row).",
            registry=self._registry,
        )
        self.input_errors = Counter(
            "batcomputer_input_errors",
            "Requests refused for bad input, by status code.",
            ["status"],
            registry=self._registry,
        )
        self.model_info = Gauge(
            "batcomputer_model_info",
            "The served model: 1 for the loaded name, version and engine.",
            ["name", "version", "engine"],
            registry=self._registry,
            multiprocess_mode="max",
        )
        self.ready = Gauge(
            "batcomputer_ready",
            "1 when the bundle is loaded and its self-check passed, else 0.",
            registry=self._registry,
            multiprocess_mode="livemin",
        )

        self.input_drift_psi = Gauge(
            "batcomputer_input_drift_psi",
            "Population stability index of an input's recent values against its training "
            "distribution (< 0.1 stable, 0.1-0.25 moderate, > 0.25 significant).",
            ["input"],
            registry=self._registry,
            multiprocess_mode="livemax",
        )
        self.input_out_of_range = Counter(
            "batcomputer_input_out_of_range",
            "Numeric input values sent outside the range seen in training.",
            ["input"],
            registry=self._registry,
        )
        self.input_unseen_category = Counter(
            "batcomputer_input_unseen_category",
            "Categorical input values sent that the model never saw in training.",
            ["input"],
            registry=self._registry,
        )

        self.shadow_requests = Counter(
            "batcomputer_shadow_requests",
            "Requests copied to the shadow version, by outcome: compared, error (it failed, "
            "timed out or answered in another shape) or dropped (the copy queue was full).",
            ["outcome"],
            registry=self._registry,
        )
        self.shadow_latency = Histogram(
            "batcomputer_shadow_request_duration_seconds",
            "Time the shadow version took to answer a copied request.",
            buckets=_LATENCY_BUCKETS,
            registry=self._registry,
        )
        self.shadow_delta = Histogram(
            "batcomputer_shadow_probability_delta",
            "Absolute difference between the two versions' probability of a flag, per row.",
            ["flag"],
            buckets=_DELTA_BUCKETS,
            registry=self._registry,
        )
        self.shadow_delta_max = Gauge(
            "batcomputer_shadow_probability_delta_max",
            "Largest absolute difference seen between the two versions' probability of a flag.",
            ["flag"],
            registry=self._registry,
            multiprocess_mode="max",
        )
        self.shadow_rows = Counter(
            "batcomputer_shadow_rows",
            "Rows compared with the shadow version, by whether its most likely flag was the "
            "same (top_flag=same) or another (top_flag=changed).",
            ["top_flag"],
            registry=self._registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            # Resolving label children costs more than the model on a single row; keep them.
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)


def refused_requests() -> Counter:
    """Requests the server refused before any route saw them, by status (``worker``).

    Registered nowhere: ``/metrics`` reads every process's samples from the
    multiprocess directory, which is where these go too.
    """
    return Counter(
        "batcomputer_http_refused",
        "Requests refused by the server itself (framing, limits, timeouts), by status code.",
        ["status"],
        registry=None,
    )


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's ``child_exit`` hook)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


class DriftMetrics:
    """The drift monitor's sink: its counts and scores as the server's Prometheus metrics."""

    def __init__(
        self, metrics: Metrics, numeric: Sequence[str], categorical: Sequence[str]
    ) -> None:
        # Label children resolved once (so every series exists from the start, at 0).
        self._out_of_range = {name: metrics.input_out_of_range.labels(name) for name in numeric}
        self._unseen = {name: metrics.input_unseen_category.labels(name) for name in categorical}
        self._psi = metrics.input_drift_psi

    def out_of_range(self, name: str, count: int) -> None:
        self._out_of_range[name].inc(count)

    def unseen_category(self, name: str, count: int) -> None:
        self._unseen[name].inc(count)

    def psi(self, name: str, value: float) -> None:
        self._psi.labels(name).set(value)
