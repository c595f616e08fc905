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
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json_response(description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": dict(schema)}}}


def _text_response(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


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
    inputs = {
        "type": "object",
        "description": "The model's named inputs; every one is required.",
        "properties": {feature.name: _input_schema(feature) for feature in features},
        "required": [feature.name for feature in features],
        "additionalProperties": False,
        "example": dict(example),
    }
    probabilities = {
        "type": "object",
        "description": "The probability of each flag; they sum to 1.",
        "properties": {flag: {"type": "number", "minimum": 0, "maximum": 1} for flag in flags},
        "required": list(flags),
        "additionalProperties": False,
    }
    batch_example = [dict(example), dict(example)]
    predict_errors = {
        "400": _error_response(
            "Malformed JSON, or an input that is missing, unknown, of the wrong type or "
            "outside its allowed values; `field` names it and `allowed` says what it takes."
        ),
        "413": _error_response(f"Body too large or more than {max_batch_rows} rows."),
        "415": _error_response("The body is not sent as application/json."),
        "503": _error_response("The model is not loaded (see /readyz)."),
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{name} model",
            "version": version,
            "description": (
                f"Scores the `{name}` model, version {version}. Send the named inputs as a "
                "JSON object to get the probability of each flag, or an array of such "
                "objects to score a batch."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": {
            "/api/predict": {
                "post": {
                    "summary": "Score one input object or a batch of them",
                    "operationId": "predict",
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Inputs"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Inputs"},
                                            "minItems": 1,
                                            "maxItems": max_batch_rows,
                                        },
                                    ]
                                },
                                "examples": {
                                    "single": {"summary": "One input", "value": dict(example)},
                                    "batch": {"summary": "A batch", "value": batch_example},
                                },
                            }
                        },
                    },
                    "responses": {
                        "200": _json_response(
                            "Flag probabilities: an object for an object, an array for an array.",
                            {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Probabilities"},
                                    {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Probabilities"},
                                    },
                                ]
                            },
                        ),
                        **predict_errors,
                    },
                }
            },
            "/api/predict/params": {
                "get": {
                    "summary": "Every input with its type and allowed values",
                    "operationId": "params",
                    "responses": {
                        "200": _json_response(
                            "The inputs in model order, the flags and an example input.",
                            {
                                "type": "object",
                                "required": ["name", "version", "inputs", "flags", "example"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "inputs": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Param"},
                                    },
                                    "flags": {"type": "array", "items": {"type": "string"}},
                                    "example": {"$ref": "#/components/schemas/Inputs"},
                                    "max_batch_rows": {"type": "integer"},
                                },
                            },
                        ),
                        "503": _error_response("The model is not loaded."),
                    },
                }
            },
            "/api/info": {
                "get": {
                    "summary": "Model name, version, status, digests, engine and metrics",
                    "operationId": "info",
                    "responses": {
                        "200": _json_response(
                            "About the served model.", {"$ref": "#/components/schemas/Info"}
                        )
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "operationId": "healthz",
                    "responses": {"200": _json_response("Alive.", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: bundle loaded and self-check passed",
                    "operationId": "readyz",
                    "responses": {
                        "200": _json_response("Ready.", {"type": "object"}),
                        "503": _error_response("Not ready; `error` says why."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {"200": _text_response("Prometheus text format.", "text/plain")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": _json_response("OpenAPI 3 document.", {"type": "object"})},
                }
            },
            "/swagger.json": {
                "get": {
                    "summary": "This document (the name older tools look for)",
                    "operationId": "swagger",
                    "responses": {"200": _json_response("OpenAPI 3 document.", {"type": "object"})},
                }
            },
            "/api/docs": {
                "get": {
                    "summary": "Swagger UI for this API, served locally",
                    "operationId": "docs",
                    "responses": {"200": _text_response("Swagger UI page.", "text/html")},
                }
            },
            "/": {
                "get": {
                    "summary": "The batclient: a form for the model's inputs",
                    "operationId": "batclient",
                    "responses": {"200": _text_response("Web page.", "text/html")},
                }
            },
        },
        "components": {
            "schemas": {
                "Inputs": inputs,
                "Probabilities": probabilities,
                "Param": {
                    "type": "object",
                    "required": ["name", "type"],
                    "properties": {
                        "name": {"type": "string"},
                        "type": {
                            "type": "string",
                            "enum": ["categorical", "number", "integer"],
                        },
                        "values": {"type": "array", "items": {"type": "string"}},
                        "minimum": {"type": "number", "nullable": True},
                        "maximum": {"type": "number", "nullable": True},
                    },
                },
                "Info": {
                    "type": "object",
                    "required": ["name", "version", "status", "engine", "schema_digest"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "status": {"type": "string", "enum": ["ready", "unready"]},
                        "engine": {"type": "string", "nullable": True},
                        "engine_reason": {"type": "string", "nullable": True},
                        "schema_digest": {"type": "string", "nullable": True},
                        "bundle_digests": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "versions": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
                "Error": {
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
                },
            }
        },
    }
