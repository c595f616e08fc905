"""Shadow traffic: copies of a share of the answered predictions, sent to another version.

The serving version answers its caller first; only then may a copy of the request go
to the shadow version's own Service (``--shadow-url``), and only if a bounded queue has
room: the caller never waits for the copy, and a slow, failing or dead shadow version
costs dropped copies, never an answer. A few sender threads (greenlets under the gevent
worker) post the copies with a timeout and compare the shadow's probabilities with the
ones the caller got, row by row, as Prometheus metrics (``metrics.Metrics.shadow_*``):
per flag the |Δp| histogram (its mean) and largest |Δp|, the rows whose most likely flag
changed, the copies that failed, and the shadow's answer time. The operator reads them
to decide whether the shadow version may take over.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batcomputer_server.metrics import Metrics

# Small on purpose: copies compete with callers for the worker's CPU, so when the worker
# is busy they are dropped rather than queued behind its callers.
# Marks a copy, which the receiving server answers but never copies on (``wsgi``).
COPY_HEADER = "X-Batcomputer-Shadow-Copy"
DEFAULT_QUEUE_SIZE = 64
DEFAULT_SENDERS = 1
# Bodies may be megabytes: the queue is bounded in bytes too, per worker.
DEFAULT_MAX_QUEUED_BYTES = 8 * 1024 * 1024
# After a copy could not reach the shadow at all: a dead shadow then costs a few connection
# attempts a second, not a busy loop; copies offered meanwhile are dropped.
PAUSE_AFTER_UNREACHABLE_SECONDS = 0.2
DEFAULT_TIMEOUT_SECONDS = 2.0
_MAX_ANSWER_BYTES = 16 * 1024 * 1024

_log = logging.getLogger(__name__)


class ShapeError(ValueError):
    """The shadow's answer does not have the shape of the serving version's."""


@dataclass(frozen=True)
class Comparison:
    """Row-by-row differences between two answers to the same request."""

    deltas: dict[str, list[float]]  # flag → |Δp| per row
    top_flag_changed: int  # rows whose most likely flag differs
    rows: int


def compare(served: Any, shadow: Any) -> Comparison:
    """Compare the answer the caller got with the shadow's answer to the same request.

    Both are a ``{flag: probability}`` object or a list of them (a batch); any other
    shape, another length or other flags is a ``ShapeError``.
    """
    served_rows = served if isinstance(served, list) else [served]
    if isinstance(served, list) != isinstance(shadow, list):
        raise ShapeError("one answer is a batch and the other is not")
    shadow_rows = shadow if isinstance(shadow, list) else [shadow]
    if len(served_rows) != len(shadow_rows):
        raise ShapeError(f"{len(shadow_rows)} rows instead of {len(served_rows)}")
    deltas: dict[str, list[float]] = {}
    changed = 0
    for ours, shadow_row in zip(served_rows, shadow_rows, strict=True):
        theirs = _probabilities(shadow_row)
        if set(theirs) != set(ours):
            raise ShapeError(f"flags {sorted(theirs)} instead of {sorted(ours)}")
        for flag, probability in ours.items():
            deltas.setdefault(flag, []).append(abs(probability - theirs[flag]))
        changed += _top_flag(ours) != _top_flag(theirs)
    return Comparison(deltas, changed, len(served_rows))


def _probabilities(row: Any) -> Mapping[str, float]:
    if not isinstance(row, Mapping) or not all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in row.values()
    ):
        raise ShapeError("a row is not an object of flag probabilities")
    return row


def _top_flag(row: Mapping[str, float]) -> str:
    # Ties go to the first flag in sorted order, the same for both versions.
    return max(sorted(row), key=lambda flag: row[flag])


class Shadow:
    """Copies ``percent`` % of answered predictions to ``url`` and records the comparison.

    ``offer`` is all the request path calls: a coin toss and a non-blocking put.
    Senders start on the first offer, so in the pre-fork server each worker has its own.
    """

    def __init__(
        self,
        url: str,
        percent: float,
        metrics: Metrics,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        senders: int = DEFAULT_SENDERS,
        chance: Callable[[], float] = random.random,
    ) -> None:
        target = urllib.parse.urlsplit(url)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"the shadow URL {url!r} is not an http:// URL with a host")
        if not 0 < percent <= 100:
            raise ValueError(f"the shadow percent {percent} is not above 0 and at most 100")
        self._host = target.hostname
        self._port = target.port or 80
        self._path = target.path.rstrip("/") + "/api/predict"
        self._share = percent / 100
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._queue: queue.Queue[tuple[bytes, Any] | None] = queue.Queue(queue_size)
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._senders = senders
        self._chance = chance
        self._started = False
        self._start_lock = threading.Lock()
        self._max_delta: dict[str, float] = {}
        self._max_lock = threading.Lock()
        self._stopped = False

    def offer(self, body: bytes, answer: Any) -> None:
        """Maybe copy a request whose ``answer`` the caller already has; never blocks."""
        if self._chance() >= self._share:
            return
        with self._bytes_lock:
            room = self._queued_bytes + len(body) <= self._max_queued_bytes
            if room:
                try:
                    self._queue.put_nowait((body, answer))
                except queue.Full:
                    room = False
                else:
                    self._queued_bytes += len(body)
        if not room:
            self._metrics.shadow_requests.labels("dropped").inc()
            return
        if not self._started:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            for number in range(self._senders):
                name = f"shadow-sender-{number}"
                threading.Thread(target=self._send_forever, name=name, daemon=True).start()
            self._started = True

    def _send_forever(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while True:
            item = self._queue.get()
            if item is None or self._stopped:
                if connection is not None:
                    connection.close()
                return
            body, answer = item
            with self._bytes_lock:
                self._queued_bytes -= len(body)
            if connection is None:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            try:
                self._mirror(connection, body, answer)
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = None
                self._failed(error)
                time.sleep(PAUSE_AFTER_UNREACHABLE_SECONDS)
            except Exception as error:  # a sender must outlive any one copy
                connection.close()
                connection = None
                self._failed(error)

    def stop(self) -> None:
        """Copy no more; the senders end once their current copy is done."""
        self._stopped = True
        for _ in range(self._senders):
            with contextlib.suppress(queue.Full):  # then they are busy and see the flag
                self._queue.put_nowait(None)

    def _failed(self, error: Exception) -> None:
        self._metrics.shadow_requests.labels("error").inc()
        _log.debug("shadow copy failed: %s", error)

    def _mirror(self, connection: http.client.HTTPConnection, body: bytes, answer: Any) -> None:
        started = time.perf_counter()
        connection.request(
            "POST",
            self._path,
            body=body,
            headers={"Content-Type": "application/json", COPY_HEADER: "1"},
        )
        response = connection.getresponse()
        payload = response.read(_MAX_ANSWER_BYTES + 1)
        self._metrics.shadow_latency.observe(time.perf_counter() - started)
        if response.status != 200 or len(payload) > _MAX_ANSWER_BYTES:
            raise ShapeError(f"the shadow answered {response.status}")
        self.record(compare(answer, orjson.loads(payload)))

    def record(self, comparison: Comparison) -> None:
        metrics = self._metrics
        metrics.shadow_requests.labels("compared").inc()
        for flag, deltas in comparison.deltas.items():
            histogram = metrics.shadow_delta.labels(flag)
            for delta in deltas:
                histogram.observe(delta)
            with self._max_lock:
                largest = max(self._max_delta.get(flag, 0.0), *deltas)
                self._max_delta[flag] = largest
            # Per process; multiprocess mode "max" takes the largest over the workers.
            metrics.shadow_delta_max.labels(flag).set(largest)
        changed = comparison.top_flag_changed
        metrics.shadow_rows.labels("changed").inc(changed)
        metrics.shadow_rows.labels("same").inc(comparison.rows - changed)


def from_settings(
    url: str | None, percent: float | None, metrics: Metrics, timeout_seconds: float
) -> Shadow | None:
    """The shadow the server was configured with, or None without a URL."""
    if not url:
        return None
    return Shadow(
        url, 100 if percent is None else percent, metrics, timeout_seconds=timeout_seconds
    )


MAX_SETTINGS_BYTES = 4096
CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class Settings:
    url: str
    percent: float


def parse_settings(raw: bytes) -> Settings | None:
    """The shadow settings file: ``{"url": "http://...", "percent": 1..100}``, or ``{}``
    for no shadow. Anything else is a ValueError naming what is wrong."""
    if len(raw) > MAX_SETTINGS_BYTES:
        raise ValueError(f"larger than {MAX_SETTINGS_BYTES} bytes")
    try:
        settings = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(settings, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(settings) - {"url", "percent"})
    if unknown:
        raise ValueError(f"unknown key {', '.join(map(repr, unknown))}; allowed: percent, url")
    if not settings:
        return None
    url, percent = settings.get("url"), settings.get("percent", 100)
    target = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if target is None or target.scheme != "http" or not target.hostname:
        raise ValueError(f"url: {url!r:.100} is not an http:// URL with a host")
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100:
        raise ValueError(f"percent: {percent!r:.40} is not a number above 0 and at most 100")
    return Settings(url, float(percent))


class ShadowFile:
    """Shadow settings from a file (``--shadow-config``; in a pod, a mounted ConfigMap),
    looked at every ``check_seconds`` and obeyed when it changes: shadowing starts, moves
    or stops without restarting the server. A missing file means no shadow; a bad one
    too, with one warning per change.
    """

    def __init__(
        self,
        path: Path,
        metrics: Metrics,
        timeout_seconds: float,
        *,
        check_seconds: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._check_seconds = check_seconds
        self._clock = clock
        self._next_check = 0.0
        self._seen: tuple[int, int, int] | None = None
        self._shadow: Shadow | None = None
        self.settings: Settings | None = None  # what the server obeys now

    def offer(self, body: bytes, answer: Any) -> None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._check_seconds
            self._look()
        if self._shadow is not None:
            self._shadow.offer(body, answer)

    def _look(self) -> None:
        try:
            stat = self._path.stat()
        except OSError:
            signature = None
        else:
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._seen:
            return
        self._seen = signature
        settings = None
        if signature is not None:
            try:
                with self._path.open("rb") as file:
                    settings = parse_settings(file.read(MAX_SETTINGS_BYTES + 1))
            except (OSError, ValueError) as error:
                _log.warning("shadow settings %s ignored: %s", self._path, error)
        if self._shadow is not None:
            self._shadow.stop()
            _log.info("no longer copying predictions")
        self._shadow = None
        self.settings = settings
        if settings is not None:
            self._shadow = Shadow(
                settings.url, settings.percent, self._metrics, timeout_seconds=self._timeout
            )
            _log.info("copying %g %% of predictions to %s", settings.percent, settings.url)
