"""The generated OpenAPI document: valid OpenAPI 3, and it says exactly what the server accepts."""

import pytest
from _server_bundles import write_bundle
from jsonschema import Draft4Validator
from openapi_spec_validator import validate

from batcomputer_bundle.bundle import CategoricalFeature, NumericFeature
from batcomputer_server import openapi
from batcomputer_server.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.load(write_bundle(tmp_path_factory.mktemp("bundle") / "b"))


@pytest.fixture(scope="module")
def document(predictor):
    return openapi.build_document(
        name=predictor.name,
        version=predictor.version,
        features=predictor.features,
        flags=predictor.flags,
        example=predictor.example(),
        max_batch_rows=100,
        server_url="/models/titanic",
    )


def _resolved(document, schema):
    """The schema with its local $refs inlined, for checking examples against it."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return _resolved(document, document["components"]["schemas"][name])
        return {key: _resolved(document, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_resolved(document, item) for item in schema]
    return schema


def test_the_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.0")
    assert document["servers"] == [{"url": "/models/titanic"}]
    assert document["info"]["version"] == "1.0.0"


def test_inputs_are_enums_and_bounded_numbers_all_required(document):
    inputs = document["components"]["schemas"]["Inputs"]
    assert inputs["properties"] == {
        "sex": {"type": "string", "enum": ["female", "male"]},
        "pclass": {"type": "string", "enum": ["1st", "2nd", "3rd"]},
        "age": {"type": "number", "minimum": 0.42, "maximum": 80.0},
        "sibsp": {"type": "integer", "minimum": 0.0, "maximum": 8.0},
    }
    assert inputs["required"] == ["sex", "pclass", "age", "sibsp"]
    assert inputs["additionalProperties"] is False


def test_a_request_is_one_object_or_a_bounded_non_empty_array(document):
    body = document["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]
    single, batch = body["schema"]["oneOf"]
    assert single == {"$ref": "#/components/schemas/Inputs"}
    assert (batch["type"], batch["minItems"], batch["maxItems"]) == ("array", 1, 100)
    schema = Draft4Validator(_resolved(document, body["schema"]))
    for example in body["examples"].values():
        schema.validate(example["value"])
    assert not schema.is_valid([])
    assert not schema.is_valid({**body["examples"]["single"]["value"], "extra": 1})


def test_the_examples_are_real_allowed_values_the_predictor_accepts(document, predictor):
    body = document["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]
    predictor.predict_one(body["examples"]["single"]["value"])
    predictor.predict_many(body["examples"]["batch"]["value"])


def test_the_response_has_one_property_per_flag(document, predictor):
    probabilities = document["components"]["schemas"]["Probabilities"]
    assert list(probabilities["properties"]) == ["died", "survived"]
    schema = Draft4Validator(_resolved(document, probabilities))
    schema.validate(predictor.predict_one(predictor.example()))


def test_every_endpoint_is_documented_with_its_errors(document):
    assert set(document["paths"]) == {
        "/api/predict",
        "/api/predict/params",
        "/api/info",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/swagger.json",
        "/api/docs",
        "/",
    }
    responses = document["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415"} <= set(responses)
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "field", "allowed"]


def test_the_predict_path_bounds_a_batch_by_the_server_limit_and_lists_every_error():
    path = openapi.predict_path({"sex": "male"}, max_batch_rows=7)["post"]
    body = path["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][1]["maxItems"] == 7
    assert body["examples"]["batch"]["value"] == [{"sex": "male"}, {"sex": "male"}]
    assert set(path["responses"]) == {"200", "400", "413", "415", "503"}
    assert "more than 7 rows" in path["responses"]["413"]["description"]


def test_the_service_paths_are_fresh_documents_whatever_the_model():
    first, second = openapi.service_paths(), openapi.service_paths()
    assert first == second
    first["/api/info"]["get"]["summary"] = "changed by a caller"
    assert openapi.service_paths() == second
    assert {path["get"]["operationId"] for path in first.values()} == {
        "info",
        "healthz",
        "readyz",
        "metrics",
        "openapi",
        "swagger",
        "docs",
        "batclient",
    }


def test_the_schemas_follow_the_features_and_flags_in_order():
    features = [NumericFeature("year", "integer", 2010.0, None), CategoricalFeature("x", {"a": 0})]
    schemas = openapi.document_schemas(features, ["low", "mid", "high"], {"year": 2011, "x": "a"})
    assert schemas["Inputs"]["properties"] == {
        "year": {"type": "integer", "minimum": 2010.0},
        "x": {"type": "string", "enum": ["a"]},
    }
    assert schemas["Probabilities"]["required"] == ["low", "mid", "high"]
    assert set(schemas) == {"Inputs", "Probabilities", "Param", "Info", "Error"}


def test_the_info_names_the_model_and_its_version():
    info = openapi.document_info("crime", "2.1.0-rc.1")
    assert (info["title"], info["version"]) == ("crime model", "2.1.0-rc.1")
    assert "`crime` model, version 2.1.0-rc.1" in info["description"]
