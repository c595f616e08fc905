"""The OpenAPI 3.0 document of a model's API, generated from its feature schema and flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batcomputer_bundle.bundle import CategoricalFeature, Feature

OPENAPI_VERSION = "3.0.3"

_JSON = "application/json"


def _input_schema(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, CategoricalFeature):
        return {"type": "string", "enum": feature.values}
    schema: dict[str, Any] = {"type": feature.type}
    if feature.minimum is not None:
        schema["minimum"] = feature.minimum
    if feature.maximum is not None:
        schema["maximum"] = feature.maximum
    return schema


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": _ref("Error")}},
    }


def _json_response(description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": dict(schema)}}}


def _text_response(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _ref(schema_name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema_name}"}


def _one_or_many(
    item: Mapping[str, Any], array_bounds: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """An object, or an array of such objects (with the given size bounds)."""
    return {"oneOf": [dict(item), {"type": "array", "items": dict(item), **(array_bounds or {})}]}


def _get(summary: str, operation_id: str, responses: Mapping[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "operationId": operation_id, "responses": dict(responses)}}


def build_document(
    *,
    name: str,
    version: str,
    features: Sequence[Feature],
    flags: Sequence[str],
    example: Mapping[str, Any],
    max_batch_rows: int,
    server_url: str = "/",
) -> dict[str, Any]:
    """The OpenAPI document; ``server_url`` is the path prefix the API is reached under."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": document_info(name, version),
        "servers": [{"url": server_url}],
        "paths": {
            "/api/predict": predict_path(example, max_batch_rows),
            "/api/predict/params": params_path(),
            **service_paths(),
        },
        "components": {"schemas": document_schemas(features, flags, example)},
    }


def document_info(name: str, version: str) -> dict[str, Any]:
    return {
        "title": f"{name} model",
        "version": version,
        "description": (
            f"Scores the `{name}` model, version {version}. Send the named inputs as a "
            "JSON object to get the probability of each flag, or an array of such "
            "objects to score a batch."
        ),
    }


def predict_path(example: Mapping[str, Any], max_batch_rows: int) -> dict[str, Any]:
    """POST /api/predict: one input object or a bounded batch, and every error it answers."""
    return {
        "post": {
            "summary": "Score one input object or a batch of them",
            "operationId": "predict",
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": _one_or_many(
                            _ref("Inputs"), {"minItems": 1, "maxItems": max_batch_rows}
                        ),
                        "examples": {
                            "single": {"summary": "One input", "value": dict(example)},
                            "batch": {
                                "summary": "A batch",
                                "value": [dict(example), dict(example)],
                            },
                        },
                    }
                },
            },
            "responses": {
                "200": _json_response(
                    "Flag probabilities: an object for an object, an array for an array.",
                    _one_or_many(_ref("Probabilities")),
                ),
                "400": _error_response(
                    "Malformed JSON, or an input that is missing, unknown, of the wrong type "
                    "or outside its allowed values; `field` names it and `allowed` says what "
                    "it takes."
                ),
                "413": _error_response(f"Body too large or more than {max_batch_rows} rows."),
                "415": _error_response("The body is not sent as application/json."),
                "503": _error_response("The model is not loaded (see /readyz)."),
            },
        }
    }


def params_path() -> dict[str, Any]:
    """GET /api/predict/params: the inputs in model order, the flags and an example."""
    return _get(
        "Every input with its type and allowed values",
        "params",
        {
            "200": _json_response(
                "The inputs in model order, the flags and an example input.",
                {
                    "type": "object",
                    "required": ["name", "version", "inputs", "flags", "example"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "inputs": {"type": "array", "items": _ref("Param")},
                        "flags": {"type": "array", "items": {"type": "string"}},
                        "example": _ref("Inputs"),
                        "max_batch_rows": {"type": "integer"},
                    },
                },
            ),
            "503": _error_response("The model is not loaded."),
        },
    )


def service_paths() -> dict[str, Any]:
    """The routes every model server has whatever the model: info, probes, docs, the page."""
    document = _json_response("OpenAPI 3 document.", {"type": "object"})
    return {
        "/api/info": _get(
            "Model name, version, status, digests, engine and metrics",
            "info",
            {"200": _json_response("About the served model.", _ref("Info"))},
        ),
        "/healthz": _get(
            "Liveness: the process answers",
            "healthz",
            {"200": _json_response("Alive.", {"type": "object"})},
        ),
        "/readyz": _get(
            "Readiness: bundle loaded and self-check passed",
            "readyz",
            {
                "200": _json_response("Ready.", {"type": "object"}),
                "503": _error_response("Not ready; `error` says why."),
            },
        ),
        "/metrics": _get(
            "Prometheus metrics",
            "metrics",
            {"200": _text_response("Prometheus text format.", "text/plain")},
        ),
        "/openapi.json": _get("This document", "openapi", {"200": document}),
        "/swagger.json": _get(
            "This document (the name older tools look for)", "swagger", {"200": document}
        ),
        "/api/docs": _get(
            "Swagger UI for this API, served locally",
            "docs",
            {"200": _text_response("Swagger UI page.", "text/html")},
        ),
        "/": _get(
            "The batclient: a form for the model's inputs",
            "batclient",
            {"200": _text_response("Web page.", "text/html")},
        ),
    }


def document_schemas(
    features: Sequence[Feature], flags: Sequence[str], example: Mapping[str, Any]
) -> dict[str, Any]:
    """components/schemas: the model's inputs and flags, and the fixed response shapes."""
    return {
        "Inputs": {
            "type": "object",
            "description": "The model's named inputs; every one is required.",
            "properties": {feature.name: _input_schema(feature) for feature in features},
            "required": [feature.name for feature in features],
            "additionalProperties": False,
            "example": dict(example),
        },
        "Probabilities": {
            "type": "object",
            "description": "The probability of each flag; they sum to 1.",
            "properties": {flag: {"type": "number", "minimum": 0, "maximum": 1} for flag in flags},
            "required": list(flags),
            "additionalProperties": False,
        },
        "Param": _param_schema(),
        "Info": _info_schema(),
        "Error": _error_schema(),
    }


def _param_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "type"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["categorical", "number", "integer"]},
            "values": {"type": "array", "items": {"type": "string"}},
            "minimum": {"type": "number", "nullable": True},
            "maximum": {"type": "number", "nullable": True},
        },
    }


def _info_schema() -> dict[str, Any]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "required": ["name", "version", "status", "engine", "schema_digest"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "status": {"type": "string", "enum": ["ready", "unready"]},
            "engine": {"type": "string", "nullable": True},
            "engine_reason": {"type": "string", "nullable": True},
            "schema_digest": {"type": "string", "nullable": True},
            "bundle_digests": dict(string_map),
            "versions": dict(string_map),
        },
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error", "field", "allowed"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong."},
            "field": {
                "type": "string",
                "nullable": True,
                "description": "The input at fault, if one is.",
            },
            "allowed": {
                "nullable": True,
                "description": (
                    "What the field takes: a list of values, an object with "
                    "minimum and maximum, or null."
                ),
            },
            "row": {
                "type": "integer",
                "description": "For a batch, the index of the row at fault.",
            },
        },
    }
