"""The HTTP adapter: the Flask app factory, the routes docs/contract.md lists over the predictor.

Every client mistake becomes a 4xx JSON body ``{"error", "field", "allowed"}``
(``scoring.error_body``); a wrong method also names the allowed ones in ``Allow``.
Request bodies are never logged. The app also answers under a path prefix
(``root_path``, e.g. ``/models/crime`` behind an Ingress): the prefix is stripped when
present, and the pages build their links from the address the browser used, so both
ways work. The WSGI middleware around the routes (whole bodies, the predict fast path,
the prefix) is in ``wsgi``.

More routes (another API over the same predictor) are Flask blueprints registered on
the app this returns: they get the same body limits, JSON 404/405 errors and metrics.
"""

from __future__ import annotations

import html
import logging
import platform
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from flask import Flask, Response, g, request, send_from_directory
from werkzeug.exceptions import HTTPException

from batcomputer_server import monitoring, oip_routes, openapi, scoring, wsgi
from batcomputer_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from batcomputer_server.metrics import Metrics
from batcomputer_server.predictor import Predictor

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


def _json(payload: Any, status: int = 200) -> Response:
    return Response(scoring.encode(payload), status=status, mimetype="application/json")


def _error(status: int, message: str, allowed: Any = None) -> Response:
    body = scoring.error_body(message, allowed)
    return Response(body, status=status, mimetype="application/json")


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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
    mirror: Callable[[bytes, Any], None] | None = None,
) -> Flask:
    """The server app for a loaded predictor, or an unready one explaining ``load_error``.

    ``mirror`` sees the body and answer of every answered prediction (``shadow.Shadow.offer``).
    """
    app = Flask(__name__, static_folder=None)
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
        status = error.code or 500
        if status == 404:
            return _error(404, "no such endpoint; the API is described at openapi.json")
        if status == 405:
            valid = sorted(getattr(error, "valid_methods", None) or ())
            methods = [method for method in valid if method != "OPTIONS"]
            response = _error(405, f"use {' or '.join(methods)} here", allowed=methods)
            response.headers["Allow"] = ", ".join(valid)
            return response
        return _error(status, error.description or error.name)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # The traceback names no input values: handlers never put them in exceptions.
        _log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal error; see the server log")

    drift = monitoring.input_drift(predictor, metrics)
    scorer = scoring.Scorer(
        predictor,
        metrics,
        max_batch_rows,
        load_error,
        observe_rows=drift.observe_rows,
        mirror=mirror,
    )
    inferer = oip_routes.Inferer(
        predictor, metrics, max_batch_rows, load_error, observe_rows=drift.observe_rows
    )
    app.register_blueprint(oip_routes.oip_blueprint(predictor, inferer))

    @app.post("/api/predict")
    def predict() -> Response:
        # JSON bodies are answered by wsgi.FastPredict; the rest get their 415 (or 503) here.
        status, payload = scorer.score(
            request.mimetype,
            request.environ[wsgi.BODY_KEY],
            copy=wsgi.COPY_ENVIRON_KEY in request.environ,
        )
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
            body["drift"] = drift.report()
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

    app.wsgi_app = oip_routes.FastInfer(app.wsgi_app, inferer, metrics)  # type: ignore[method-assign]
    app.wsgi_app = wsgi.wrap(  # type: ignore[method-assign]
        app.wsgi_app, scorer, metrics, max_body_bytes=max_body_bytes, prefix=prefix
    )
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
