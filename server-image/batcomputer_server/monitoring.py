"""Input drift monitoring for a loaded predictor, reported through the server's metrics."""

from __future__ import annotations

import logging

from batcomputer_bundle import reference
from batcomputer_bundle.bundle import BundleError
from batcomputer_server.drift import DriftMonitor
from batcomputer_server.metrics import DriftMetrics, Metrics
from batcomputer_server.predictor import Predictor

_log = logging.getLogger(__name__)


def drift_monitor(predictor: Predictor, metrics: Metrics) -> DriftMonitor | str:
    """A monitor over the inputs the bundle records references for, or why there is none.

    A bundle without usable references still serves: drift is an observation, not a
    condition of scoring.
    """
    try:
        references = reference.parse(predictor.manifest, predictor.features)
    except BundleError as error:
        _log.warning("no input drift monitoring: %s", error)
        return f"no input drift monitoring: {error}"
    if not references:
        return f"no input drift monitoring: the bundle records no {reference.MANIFEST_KEY}"
    numeric = [n for n, r in references.items() if isinstance(r, reference.NumericReference)]
    categorical = [n for n in references if n not in numeric]
    return DriftMonitor(references, DriftMetrics(metrics, numeric, categorical))
