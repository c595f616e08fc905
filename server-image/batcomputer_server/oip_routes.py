"""The Open Inference Protocol v2 REST routes (``/v2/...``) beside the friendly API.

Errors keep the server's one shape ``{"error", "field", "allowed"}``, whose ``error`` is
the protocol's own error object; a model name or version this server does not serve is
a 404 naming the one it does. JSON inference requests are answered by ``FastInfer``
straight from the WSGI environ, as ``/api/predict`` is; the Flask route answers the rest
(other content types, the binary tensor extension) with the same ``Inferer``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import orjson
from flask import Blueprint, Response, request

from batcomputer_server import oip, scoring, wsgi
from batcomputer_server.metrics import Metrics
from batcomputer_server.monitoring import RowsObserver
from batcomputer_server.predictor import InputError, Predictor

_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(/versions/([^/]+))?/infer$")
_INFER_ROUTE = "/v2/models/<name>/infer"
_VERSIONED_INFER_ROUTE = "/v2/models/<name>/versions/<version>/infer"


def _error_payload(message: str, field: str | None = None, allowed: Any = None) -> bytes:
    return orjson.dumps({"error": message, "field": field, "allowed": allowed})


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def _server_version() -> str:
    try:
        return metadata.version("batcomputer")
    except metadata.PackageNotFoundError:
        return "unknown"


class Inferer:
    """Which model a path names, and an inference request body to status and JSON bytes."""

    def __init__(
        self,
        predictor: Predictor | None,
        metrics: Metrics,
        max_batch_rows: int,
        load_error: str | None = None,
        observe_rows: RowsObserver | None = None,
    ) -> None:
        self._predictor = predictor
        self._metrics = metrics
        self._max_batch_rows = max_batch_rows
        self._load_error = load_error
        self._observe_rows = observe_rows

    def refusal(self, name: str, version: str | None) -> tuple[int, bytes] | None:
        """Why this server does not answer for that model and version, or None."""
        predictor = self._predictor
        if predictor is None:
            return 503, _error_payload(f"the model is not ready: {self._load_error}")
        if name != predictor.name:
            message = f"no model {name!r} here; this server serves {predictor.name!r}"
            return 404, _error_payload(message, "model_name", [predictor.name])
        if version is not None and version != predictor.version:
            message = (
                f"no version {version!r} of {name!r} here; this server serves {predictor.version!r}"
            )
            return 404, _error_payload(message, "model_version", [predictor.version])
        return None

    def infer(self, name: str, version: str | None, body: bytes) -> tuple[int, bytes]:
        refused = self.refusal(name, version)
        if refused is not None:
            return refused
        predictor = self._predictor
        assert predictor is not None
        try:
            parsed_body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return 400, _error_payload(f"the request body is not valid JSON: {error}")
        try:
            parsed = oip.parse_infer_request(
                parsed_body, predictor.features, predictor.flags, self._max_batch_rows
            )
            if self._observe_rows is not None:
                self._observe_rows(parsed.rows)
            if len(parsed.rows) == 1:  # the single-row path validates and encodes faster
                probabilities = [predictor.predict_one(parsed.rows[0])]
            else:
                probabilities = predictor.predict_many(parsed.rows)
        except oip.ProtocolError as error:
            return error.status, _error_payload(str(error), error.field, error.allowed)
        except InputError as error:
            payload: dict[str, Any] = {
                "error": str(error),
                "field": error.field,
                "allowed": error.allowed,
            }
            if error.row is not None:
                payload["row"] = error.row
            return 400, orjson.dumps(payload)
        self._metrics.predicted_rows.inc(len(parsed.rows))
        response = oip.infer_response(predictor.name, predictor.version, parsed, probabilities)
        return 200, orjson.dumps(response)


class FastInfer:
    """Answers JSON inference POSTs straight from the WSGI environ (Flask costs more than
    the model on one row); anything else goes on to Flask."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], inferer: Inferer, metrics: Metrics
    ) -> None:
        self._app = app
        self._inferer = inferer
        self._metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        match = (
            _INFER_PATH.match(environ.get("PATH_INFO", ""))
            if environ.get("REQUEST_METHOD") == "POST"
            and "HTTP_INFERENCE_HEADER_CONTENT_LENGTH" not in environ
            and environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            in ("", "application/json")
            else None
        )
        if match is None:
            return self._app(environ, start_response)
        started = time.perf_counter()
        name, _, version = match.groups()
        status, payload = self._inferer.infer(name, version, environ[wsgi.BODY_KEY])
        if 400 <= status < 500:
            self._metrics.input_errors.labels(str(status)).inc()
        route = _INFER_ROUTE if version is None else _VERSIONED_INFER_ROUTE
        self._metrics.observe(route, "POST", status, time.perf_counter() - started)
        start_response(
            scoring.status_line(status),
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


def oip_blueprint(predictor: Predictor | None, inferer: Inferer) -> Blueprint:
    """Routes for one served model (or none yet: then every model route answers 503)."""
    blueprint = Blueprint("oip", __name__, url_prefix="/v2")
    server = {"name": "batcomputer", "version": _server_version(), "extensions": []}

    def refused(name: str, version: str | None) -> Response | None:
        refusal = inferer.refusal(name, version)
        if refusal is None:
            return None
        status, payload = refusal
        return Response(payload, status=status, mimetype="application/json")

    @blueprint.get("")
    def server_metadata() -> Response:
        return _json(server)

    @blueprint.get("/health/live")
    def live() -> Response:
        return _json({"live": True})

    @blueprint.get("/health/ready")
    def ready() -> Response:
        return _json({"ready": predictor is not None}, 200 if predictor is not None else 503)

    @blueprint.get("/models/<name>")
    @blueprint.get("/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str | None = None) -> Response:
        answer = refused(name, version)
        if answer is not None or predictor is None:
            return answer
        return _json(
            oip.model_metadata(
                predictor.name,
                predictor.version,
                predictor.engine.name,
                predictor.features,
                predictor.flags,
            )
        )

    @blueprint.get("/models/<name>/ready")
    @blueprint.get("/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        answer = refused(name, version)
        if answer is not None or predictor is None:
            return answer
        return _json({"name": predictor.name, "ready": True})

    @blueprint.post("/models/<name>/infer")
    @blueprint.post("/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        # JSON bodies are answered by FastInfer; the rest get their errors here.
        answer = refused(name, version)
        if answer is not None:
            return answer
        if "Inference-Header-Content-Length" in request.headers:
            message = (
                "binary tensor data is not supported; send tensor data as JSON "
                "(tritonclient: binary_data=False)"
            )
            return Response(_error_payload(message), status=400, mimetype="application/json")
        if request.mimetype not in ("", "application/json"):
            message = "send the inference request as JSON (application/json)"
            return Response(_error_payload(message), status=415, mimetype="application/json")
        status, payload = inferer.infer(name, version, request.environ[wsgi.BODY_KEY])
        return Response(payload, status=status, mimetype="application/json")

    return blueprint
