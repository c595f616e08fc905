"""The HTTP adapter: Flask routes over the predictor, exactly as the contract's §2.

Every client mistake becomes a 4xx JSON body ``{"error", "field", "allowed"}``; request
bodies are never logged. The app also answers under a path prefix (``root_path``, e.g.
``/models/crime`` behind an Ingress): the prefix is stripped when present, and the pages
build their links from the address the browser used, so both ways work.
"""

from __future__ import annotations

import html
import logging
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import swagger_ui_bundle
from flask import Flask, Response, g, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from batcomputer_server import openapi
from batcomputer_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from batcomputer_server.metrics import Metrics
from batcomputer_server.predictor import InputError, Predictor

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_BATCH_ROWS = 5000

_WEB = Path(__file__).parent / "web"
_SWAGGER_ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)
_LIBRARIES = (
    "scikit-learn",
    "numpy",
    "scipy",
    "onnxruntime",
    "skl2onnx",
    "flask",
    "gunicorn",
    "prometheus-client",
)
_PAGE_SECURITY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"
)

_log = logging.getLogger(__name__)


class _MalformedJSONError(ValueError):
    pass


def _parse_body(body: bytes) -> Any:
    # orjson refuses NaN, Infinity, invalid UTF-8 and nesting deeper than 1024 by itself.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _MalformedJSONError(f"the request body is not valid JSON: {error}") from None


def _encode(payload: Any) -> bytes:
    return orjson.dumps(payload)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(_encode(payload), status=status, mimetype="application/json")


def _error_bytes(message: str, allowed: Any = None) -> bytes:
    """An error that concerns no single input field (those come from ``InputError``)."""
    return _encode({"error": message, "field": None, "allowed": allowed})


def _error(status: int, message: str, allowed: Any = None) -> Response:
    return Response(_error_bytes(message, allowed), status=status, mimetype="application/json")


_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    503: "503 Service Unavailable",
}


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _Scorer:
    """POST /api/predict from content type and body to status and JSON bytes."""

    def __init__(
        self,
        predictor: Predictor | None,
        metrics: Metrics,
        max_batch_rows: int,
        load_error: str | None,
    ) -> None:
        self._predictor = predictor
        self._metrics = metrics
        self._max_batch_rows = max_batch_rows
        self._load_error = load_error

    def score(self, mimetype: str, read_body: Callable[[], bytes]) -> tuple[int, bytes]:
        predictor = self._predictor
        if predictor is None:
            return 503, _error_bytes(f"the model is not ready: {self._load_error}")
        if mimetype != "application/json":
            return 415, _error_bytes("send the inputs as JSON with Content-Type: application/json")
        try:
            inputs = _parse_body(read_body())
            if type(inputs) is list:
                if len(inputs) > self._max_batch_rows:
                    limit = {"minimum": 1, "maximum": self._max_batch_rows}
                    message = f"a batch may hold at most {self._max_batch_rows} rows"
                    return 413, _error_bytes(message, allowed=limit)
                result: Any = predictor.predict_many(inputs)
                self._metrics.predicted_rows.inc(len(inputs))
            else:
                result = predictor.predict_one(inputs)
                self._metrics.predicted_rows.inc()
        except _MalformedJSONError as error:
            return 400, _error_bytes(str(error))
        except InputError as error:
            body = {"error": str(error), "field": error.field, "allowed": error.allowed}
            if error.row is not None:
                body["row"] = error.row
            return 400, _encode(body)
        return 200, _encode(result)


class _FastPredict:
    """Answers POST /api/predict straight from the WSGI environ.

    Flask's request and response objects cost ten times the model itself on a single
    row, so the hot path skips them; everything else (and bodies without a
    Content-Length) goes through Flask, which shares the same ``_Scorer``.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        scorer: _Scorer,
        metrics: Metrics,
        max_body_bytes: int,
    ) -> None:
        self._app = app
        self._scorer = scorer
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length_text = environ.get("CONTENT_LENGTH")
        if (
            environ.get("PATH_INFO") != "/api/predict"
            or environ.get("REQUEST_METHOD") != "POST"
            or not length_text
        ):
            return self._app(environ, start_response)
        started = time.perf_counter()
        headers = [("Content-Type", "application/json")]
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= self._max_body_bytes:
            status = 413 if length > 0 else 400
            payload = _error_bytes(
                f"the request body is larger than {self._max_body_bytes} bytes"
                if status == 413
                else "the Content-Length header is not a valid length"
            )
            headers.append(("Connection", "close"))
        else:
            mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            stream = environ["wsgi.input"]
            status, payload = self._scorer.score(mimetype, lambda: stream.read(length))
        headers.append(("Content-Length", str(len(payload))))
        start_response(_STATUS_LINES[status], headers)
        if 400 <= status < 500:
            self._metrics.input_errors.labels(str(status)).inc()
        self._metrics.observe("/api/predict", "POST", status, time.perf_counter() - started)
        return [payload]


class _PathPrefix:
    """Serve the app both at ``/`` and under ``prefix`` (Ingress paths with or without rewrite)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], prefix: str) -> None:
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


def _normalise_prefix(root_path: str) -> str:
    stripped = root_path.strip().strip("/")
    return "/" + stripped if stripped else ""


def create_app(
    predictor: Predictor | None,
    *,
    load_error: str | None = None,
    manifest: Mapping[str, Any] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
    root_path: str = "",
    metrics: Metrics | None = None,
) -> Flask:
    """The server app for a loaded predictor, or an unready one explaining ``load_error``."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    metrics = metrics or Metrics()
    prefix = _normalise_prefix(root_path)
    versions = _library_versions()
    about = dict(manifest or (predictor.manifest if predictor else {}))
    if predictor is not None:
        metrics.model_info.labels(predictor.name, predictor.version, predictor.engine.name).set(1)
    metrics.ready.set(1 if predictor is not None else 0)
    documents: dict[str, dict[str, Any]] = {}
    batclient_page = _batclient_page(str(about.get("name", "model")))
    docs_page = _docs_page(str(about.get("name", "model")))

    def not_ready() -> Response:
        return _error(503, f"the model is not ready: {load_error}")

    @app.before_request
    def _start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = g.get("started")
        if started is not None:
            metrics.observe(
                rule, request.method, response.status_code, time.perf_counter() - started
            )
        if 400 <= response.status_code < 500:
            metrics.input_errors.labels(str(response.status_code)).inc()
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        if isinstance(error, RequestEntityTooLarge):
            return _error(413, f"the request body is larger than {max_body_bytes} bytes")
        status = error.code or 500
        if status == 404:
            return _error(404, "no such endpoint; the API is described at openapi.json")
        if status == 405:
            methods = sorted(set(getattr(error, "valid_methods", None) or ()) - {"OPTIONS"})
            return _error(405, f"use {' or '.join(methods)} here", allowed=methods)
        return _error(status, error.description or error.name)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # The traceback names no input values: handlers never put them in exceptions.
        _log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal error; see the server log")

    scorer = _Scorer(predictor, metrics, max_batch_rows, load_error)

    @app.post("/api/predict")
    def predict() -> Response:
        # Only bodies without a Content-Length (chunked) get here; see _FastPredict.
        body = request.environ["wsgi.input"].read(max_body_bytes + 1)
        if len(body) > max_body_bytes:
            return _error(413, f"the request body is larger than {max_body_bytes} bytes")
        status, payload = scorer.score(request.mimetype, lambda: body)
        return Response(payload, status=status, mimetype="application/json")

    @app.get("/api/predict/params")
    def params() -> Response:
        if predictor is None:
            return not_ready()
        return _json(
            {
                "name": predictor.name,
                "version": predictor.version,
                "inputs": predictor.params(),
                "flags": list(predictor.flags),
                "example": predictor.example(),
                "max_batch_rows": max_batch_rows,
            }
        )

    @app.get("/api/info")
    def info() -> Response:
        body: dict[str, Any] = {
            "name": str(about.get("name", "unknown")),
            "version": str(about.get("version", "unknown")),
            "status": "ready" if predictor is not None else "unready",
            "engine": None,
            "engine_reason": None,
            "schema_digest": about.get("schema_digest"),
        }
        if predictor is not None:
            body.update(predictor.info())
        else:
            body["error"] = load_error
        body["versions"] = versions
        body["limits"] = {"max_body_bytes": max_body_bytes, "max_batch_rows": max_batch_rows}
        return _json(body)

    def document() -> Response:
        if predictor is None:
            return not_ready()
        server_url = request.script_root or "/"
        if server_url not in documents:
            documents[server_url] = openapi.build_document(
                name=predictor.name,
                version=predictor.version,
                features=predictor.features,
                flags=predictor.flags,
                example=predictor.example(),
                max_batch_rows=max_batch_rows,
                server_url=server_url,
            )
        return _json(documents[server_url])

    app.add_url_rule("/openapi.json", "openapi", document)
    app.add_url_rule("/swagger.json", "swagger", document)

    @app.get("/api/docs")
    def docs() -> Response:
        return Response(docs_page, mimetype="text/html")

    @app.get("/api/docs/assets/<name>")
    def docs_asset(name: str) -> Response:
        if name not in _SWAGGER_ASSETS:
            return _error(404, "no such Swagger UI asset")
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, name, max_age=3600)

    @app.get("/")
    def batclient() -> Response:
        response = Response(batclient_page, mimetype="text/html")
        response.headers["Content-Security-Policy"] = _PAGE_SECURITY
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "alive"})

    @app.get("/readyz")
    def readyz() -> Response:
        if predictor is None:
            return not_ready()
        return _json({"status": "ready", "engine": predictor.engine.name})

    @app.get("/metrics")
    def metrics_text() -> Response:
        return Response(metrics.exposition(), mimetype=METRICS_CONTENT_TYPE)

    app.wsgi_app = _FastPredict(app.wsgi_app, scorer, metrics, max_body_bytes)  # type: ignore[method-assign]
    if prefix:
        app.wsgi_app = _PathPrefix(app.wsgi_app, prefix)  # type: ignore[method-assign]
    return app


def _batclient_page(model_name: str) -> str:
    template = (_WEB / "index.html").read_text()
    return (
        template.replace("{{title}}", html.escape(model_name))
        .replace("/*{{style}}*/", (_WEB / "batclient.css").read_text())
        .replace("/*{{script}}*/", (_WEB / "batclient.js").read_text())
    )


def _docs_page(model_name: str) -> str:
    return (_WEB / "docs.html").read_text().replace("{{title}}", html.escape(model_name))
