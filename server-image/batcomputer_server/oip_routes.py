"""The Open Inference Protocol v2 REST routes (``/v2/...``) beside the friendly API.

Errors keep the server's one shape ``{"error", "field", "allowed"}``, whose ``error`` is
the protocol's own error object; a model name or version this server does not serve is
a 404 naming the one it does.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import orjson
from flask import Blueprint, Response, request

from batcomputer_server import oip
from batcomputer_server.metrics import Metrics
from batcomputer_server.monitoring import RowsObserver
from batcomputer_server.predictor import InputError, Predictor


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def _error(status: int, message: str, field: str | None = None, allowed: Any = None) -> Response:
    return _json({"error": message, "field": field, "allowed": allowed}, status)


def _server_version() -> str:
    try:
        return metadata.version("batcomputer")
    except metadata.PackageNotFoundError:
        return "unknown"


def oip_blueprint(
    predictor: Predictor | None,
    *,
    metrics: Metrics,
    max_batch_rows: int,
    load_error: str | None = None,
    observe_rows: RowsObserver | None = None,
) -> Blueprint:
    """Routes for one served model (or none yet: then every model route answers 503)."""
    blueprint = Blueprint("oip", __name__, url_prefix="/v2")
    server = {"name": "batcomputer", "version": _server_version(), "extensions": []}

    def served(name: str, version: str | None) -> Predictor | Response:
        if predictor is None:
            return _error(503, f"the model is not ready: {load_error}")
        if name != predictor.name:
            return _error(
                404,
                f"no model {name!r} here; this server serves {predictor.name!r}",
                "model_name",
                [predictor.name],
            )
        if version is not None and version != predictor.version:
            return _error(
                404,
                f"no version {version!r} of {name!r} here; this server serves "
                f"{predictor.version!r}",
                "model_version",
                [predictor.version],
            )
        return predictor

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
        found = served(name, version)
        if isinstance(found, Response):
            return found
        return _json(
            oip.model_metadata(
                found.name, found.version, found.engine.name, found.features, found.flags
            )
        )

    @blueprint.get("/models/<name>/ready")
    @blueprint.get("/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        found = served(name, version)
        if isinstance(found, Response):
            return found
        return _json({"name": found.name, "ready": True})

    @blueprint.post("/models/<name>/infer")
    @blueprint.post("/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        found = served(name, version)
        if isinstance(found, Response):
            return found
        if "Inference-Header-Content-Length" in request.headers:
            return _error(
                400,
                "binary tensor data is not supported; send tensor data as JSON "
                "(tritonclient: binary_data=False)",
            )
        if request.mimetype not in ("", "application/json"):
            return _error(415, "send the inference request as JSON (application/json)")
        try:
            body = orjson.loads(request.get_data())
        except orjson.JSONDecodeError as error:
            return _error(400, f"the request body is not valid JSON: {error}")
        try:
            parsed = oip.parse_infer_request(body, found.features, found.flags, max_batch_rows)
            if observe_rows is not None:
                observe_rows(parsed.rows)
            probabilities = found.predict_many(parsed.rows)
        except oip.ProtocolError as error:
            return _error(error.status, str(error), error.field, error.allowed)
        except InputError as error:
            payload: dict[str, Any] = {
                "error": str(error),
                "field": error.field,
                "allowed": error.allowed,
            }
            if error.row is not None:
                payload["row"] = error.row
            return _json(payload, 400)
        metrics.predicted_rows.inc(len(parsed.rows))
        return _json(oip.infer_response(found.name, found.version, parsed, probabilities))

    return blueprint
