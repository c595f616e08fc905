"""Input drift monitoring for a loaded predictor, reported through the server's metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from batcomputer_bundle import reference
from batcomputer_bundle.bundle import BundleError
from batcomputer_server.drift import DriftMonitor
from batcomputer_server.metrics import DriftMetrics, Metrics
from batcomputer_server.predictor import Predictor

_log = logging.getLogger(__name__)

RowsObserver = Callable[[Any], None]


class InputDrift:
    """What the routes need: a rows observer (None when nothing is monitored) and a report."""

    def __init__(self, monitor: DriftMonitor | None, reason: str | None = None) -> None:
        self._monitor = monitor
        self._reason = reason
        self.observe_rows: RowsObserver | None = monitor.observe_rows if monitor else None

    def report(self) -> dict[str, Any] | None:
        if self._monitor is not None:
            return self._monitor.report()
        return None if self._reason is None else {"error": self._reason}


def input_drift(predictor: Predictor | None, metrics: Metrics) -> InputDrift:
    """Monitor the inputs the bundle records references for; say why when there are none.

    A bundle without usable references still serves: drift is an observation, not a
    condition of scoring.
    """
    if predictor is None:
        return InputDrift(None)
    try:
        references = reference.parse(predictor.manifest, predictor.features)
    except BundleError as error:
        _log.warning("no input drift monitoring: %s", error)
        return InputDrift(None, f"no input drift monitoring: {error}")
    if not references:
        return InputDrift(
            None, f"no input drift monitoring: the bundle records no {reference.MANIFEST_KEY}"
        )
    numeric = [n for n, r in references.items() if isinstance(r, reference.NumericReference)]
    categorical = [n for n in references if n not in numeric]
    return InputDrift(DriftMonitor(references, DriftMetrics(metrics, numeric, categorical)))
