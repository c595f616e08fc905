"""WSGI middleware around the Flask app: whole request bodies, the predict fast path, the prefix.

``BufferedBody`` reads every request body in full, within ``max_body_bytes``, before any
route runs, so no route ever waits on a client or meets a framing error: an error while
reading (a malformed chunk, a client that stops sending) propagates to the server, whose
worker answers it in the same JSON shape (see ``worker``).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from batcomputer_server import scoring
from batcomputer_server.metrics import Metrics

_log = logging.getLogger(__name__)

WSGIApp = Callable[..., Iterable[bytes]]

BODY_KEY = "batcomputer.body"
# Sent with every shadow copy (``shadow.COPY_HEADER``): a copy is answered, never copied on,
# so two servers shadowing each other (or one itself) cannot bounce copies forever.
COPY_ENVIRON_KEY = "HTTP_X_BATCOMPUTER_SHADOW_COPY"
_METHODS_WITH_BODIES = frozenset({"POST", "PUT", "PATCH"})


def _json_response(start_response: Callable[..., Any], status: int, payload: bytes) -> list[bytes]:
    start_response(
        scoring.status_line(status),
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def _content_length(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


class BufferedBody:
    """Every request body read in full and handed on as ``environ[BODY_KEY]``.

    A body with neither Content-Length nor chunked framing on a method that carries one
    is a 411; a body over ``max_body_bytes`` a 413 (it is not read).
    """

    def __init__(self, app: WSGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self._app = app
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length_text = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        too_large = f"the request body is larger than {self._max_body_bytes} bytes"
        if length_text:
            length = _content_length(length_text)
            if length is None:
                return self._refuse(start_response, 400, "Content-Length is not a valid length")
            if length > self._max_body_bytes:
                return self._refuse(start_response, 413, too_large)
            body = stream.read(length) if length else b""
            if len(body) < length:
                message = "the request body ended before its Content-Length"
                return self._refuse(start_response, 400, message)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = stream.read(self._max_body_bytes + 1)
            if len(body) > self._max_body_bytes:
                return self._refuse(start_response, 413, too_large)
            del environ["HTTP_TRANSFER_ENCODING"]
        elif environ.get("REQUEST_METHOD") in _METHODS_WITH_BODIES:
            message = "send a Content-Length (or a chunked body) with the request"
            return self._refuse(start_response, 411, message)
        else:
            body = b""
        environ[BODY_KEY] = body
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._app(environ, start_response)

    def _refuse(self, start_response: Callable[..., Any], status: int, message: str) -> Any:
        self._metrics.input_errors.labels(str(status)).inc()
        return _json_response(start_response, status, scoring.error_body(message))


class FastPredict:
    """Answers JSON POSTs to /api/predict straight from the WSGI environ.

    Flask's request and response objects cost ten times the model itself on a single
    row, so the hot path skips them; anything else goes through Flask, whose route
    shares the same ``Scorer``.
    """

    def __init__(self, app: WSGIApp, scorer: scoring.Scorer, metrics: Metrics) -> None:
        self._app = app
        self._scorer = scorer
        self._metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if (
            environ.get("PATH_INFO") != "/api/predict"
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            != "application/json"
        ):
            return self._app(environ, start_response)
        started = time.perf_counter()
        try:
            status, payload = self._scorer.score(
                "application/json", environ[BODY_KEY], copy=COPY_ENVIRON_KEY in environ
            )
        except Exception:
            # As the app's own handler: a JSON 500, and counted, so a rollout's analysis
            # sees a version whose model fails at run time.
            _log.exception("unexpected error on POST /api/predict")
            status, payload = 500, scoring.error_body("internal error; see the server log")
        if 400 <= status < 500:
            self._metrics.input_errors.labels(str(status)).inc()
        self._metrics.observe("/api/predict", "POST", status, time.perf_counter() - started)
        return _json_response(start_response, status, payload)


class PathPrefix:
    """Serve the app both at ``/`` and under ``prefix`` (Ingress paths with or without rewrite)."""

    def __init__(self, app: WSGIApp, prefix: str) -> None:
        self._app = app
        self._prefix = prefix

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        prefix = self._prefix
        if path == prefix:
            # Pages link relative to their own address, so the prefix needs its slash.
            start_response("308 Permanent Redirect", [("Location", prefix + "/")])
            return [b""]
        if path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix) :]
        elif environ.get("HTTP_X_FORWARDED_PREFIX", "").rstrip("/") == prefix:
            environ["SCRIPT_NAME"] = prefix
        return self._app(environ, start_response)


def wrap(
    app: WSGIApp,
    scorer: scoring.Scorer,
    metrics: Metrics,
    *,
    max_body_bytes: int,
    prefix: str,
) -> WSGIApp:
    """The Flask ``wsgi_app`` inside the middleware, outermost first: prefix, body, fast path."""
    wrapped: WSGIApp = BufferedBody(FastPredict(app, scorer, metrics), metrics, max_body_bytes)
    return PathPrefix(wrapped, prefix) if prefix else wrapped
