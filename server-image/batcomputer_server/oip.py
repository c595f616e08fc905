"""Open Inference Protocol v2 (KServe / Triton REST) over the predictor's named inputs.

Pure translation: an inference request's named tensors become the predictor's input rows,
and its probabilities become one FP64 output tensor per flag. Each model input is a tensor
of its own: ``BYTES`` for a categorical input (its allowed labels as strings), ``FP64`` for
a numeric one (any numeric datatype is accepted), shape ``[batch]`` or ``[batch, 1]``.
Tensor data travels as JSON; the binary tensor extension is refused with a clear error.
The values themselves are validated by the predictor, exactly as for ``/api/predict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batcomputer_bundle.bundle import CategoricalFeature, Feature
from batcomputer_server.predictor import InputError

CATEGORICAL_DATATYPE = "BYTES"
NUMERIC_DATATYPE = "FP64"
OUTPUT_DATATYPE = "FP64"
NUMERIC_DATATYPES = (
    "FP64",
    "FP32",
    "FP16",
    "INT64",
    "INT32",
    "INT16",
    "INT8",
    "UINT64",
    "UINT32",
    "UINT16",
    "UINT8",
)
_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
_TENSOR_KEYS = ("name", "shape", "datatype", "parameters", "data")


class ProtocolError(InputError):
    """A request the protocol (not a single value) makes invalid; ``status`` is its HTTP code."""

    def __init__(self, field: str | None, message: str, allowed: Any, status: int = 400) -> None:
        super().__init__(field, message, allowed)
        self.status = status


@dataclass(frozen=True)
class InferRequest:
    """What an inference request asks: predictor rows, outputs wanted, the id to echo."""

    rows: list[dict[str, Any]]
    outputs: tuple[str, ...]
    request_id: str | None


def datatype_of(feature: Feature) -> str:
    return CATEGORICAL_DATATYPE if isinstance(feature, CategoricalFeature) else NUMERIC_DATATYPE


def model_metadata(
    name: str, version: str, platform: str, features: Sequence[Feature], flags: Sequence[str]
) -> dict[str, Any]:
    """The model metadata response: every input and every flag as a ``[-1]`` tensor."""
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [
            {"name": feature.name, "datatype": datatype_of(feature), "shape": [-1]}
            for feature in features
        ],
        "outputs": [{"name": flag, "datatype": OUTPUT_DATATYPE, "shape": [-1]} for flag in flags],
    }


def parse_infer_request(
    body: Any, features: Sequence[Feature], flags: Sequence[str], max_batch_rows: int
) -> InferRequest:
    """An inference request object → predictor rows; ``ProtocolError`` names what is wrong."""
    if not isinstance(body, dict):
        raise ProtocolError(None, "expected an inference request object", list(_REQUEST_KEYS))
    unknown = sorted(str(key) for key in body if key not in _REQUEST_KEYS)
    if unknown:
        message = f"unknown request field {unknown[0]!r}"
        raise ProtocolError(unknown[0], message, list(_REQUEST_KEYS))
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("id", "'id' must be a string", None)
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError("parameters", "'parameters' must be an object", None)
    by_name = {feature.name: feature for feature in features}
    columns = _columns(body.get("inputs"), by_name, max_batch_rows)
    names = [feature.name for feature in features]
    ordered = [columns[name] for name in names]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*ordered, strict=True)]
    return InferRequest(rows, _requested_outputs(body.get("outputs"), flags), request_id)


def _columns(
    inputs: Any, by_name: Mapping[str, Feature], max_batch_rows: int
) -> dict[str, list[Any]]:
    names = list(by_name)
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("inputs", "'inputs' must be a non-empty array of tensors", names)
    columns: dict[str, list[Any]] = {}
    batch: int | None = None
    for tensor in inputs:
        name, values = _tensor_values(tensor, by_name, max_batch_rows)
        if name in columns:
            raise ProtocolError(name, f"input tensor {name!r} is given twice", names)
        if batch is not None and len(values) != batch:
            message = f"input tensor {name!r} holds {len(values)} values but others hold {batch}"
            raise ProtocolError(name, message, {"minimum": batch, "maximum": batch})
        batch = len(values)
        columns[name] = values
    for name in names:
        if name not in columns:
            raise ProtocolError(name, f"missing input tensor {name!r}", names)
    return columns


def _tensor_values(
    tensor: Any, by_name: Mapping[str, Feature], max_batch_rows: int
) -> tuple[str, list[Any]]:
    names = list(by_name)
    if not isinstance(tensor, dict):
        raise ProtocolError("inputs", "each input must be a tensor object", list(_TENSOR_KEYS))
    name = tensor.get("name")
    if not isinstance(name, str) or name not in by_name:
        shown = name if isinstance(name, str) else None
        message = (
            f"unknown input tensor {name!r}; the model takes only the listed inputs"
            if isinstance(name, str)
            else "each input tensor needs a 'name' string"
        )
        raise ProtocolError(shown, message, names)
    parameters = tensor.get("parameters")
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        raise ProtocolError(
            name,
            f"input tensor {name!r} is sent as binary data; this server reads tensor data "
            "as JSON only (tritonclient: set_data_from_numpy(..., binary_data=False))",
            None,
            status=400,
        )
    feature = by_name[name]
    _check_datatype(name, feature, tensor.get("datatype"))
    data = tensor.get("data")
    if not isinstance(data, list) or not data:
        raise ProtocolError(name, f"input tensor {name!r} needs a non-empty 'data' array", None)
    values = _flattened(name, data)
    _check_shape(name, tensor.get("shape"), len(values), max_batch_rows)
    return name, values


def _check_datatype(name: str, feature: Feature, datatype: Any) -> None:
    if isinstance(feature, CategoricalFeature):
        if datatype != CATEGORICAL_DATATYPE:
            message = f"input tensor {name!r} is categorical: its datatype must be BYTES"
            raise ProtocolError(name, message, [CATEGORICAL_DATATYPE])
    elif datatype not in NUMERIC_DATATYPES:
        message = f"input tensor {name!r} is numeric: its datatype must be a number type"
        raise ProtocolError(name, message, list(NUMERIC_DATATYPES))


def _flattened(name: str, data: list[Any]) -> list[Any]:
    """Flat data as it is, or one level of nesting (a ``[batch, 1]`` tensor written as rows)."""
    if not any(type(value) is list for value in data):
        return data
    if not all(type(value) is list for value in data):
        raise ProtocolError(name, f"input tensor {name!r} mixes nested and flat data", None)
    flat = [value for row in data for value in row]
    if any(type(value) is list for value in flat):
        raise ProtocolError(
            name, f"input tensor {name!r} must have shape [batch] or [batch, 1]", None
        )
    return flat


def _check_shape(name: str, shape: Any, length: int, max_batch_rows: int) -> None:
    valid = (
        isinstance(shape, list)
        and all(type(size) is int for size in shape)
        and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
    )
    if not valid:
        raise ProtocolError(
            name,
            f"input tensor {name!r} must have shape [batch] or [batch, 1]; got {shape!r}",
            None,
        )
    if shape[0] != length:
        message = f"input tensor {name!r} has shape {shape} but holds {length} values"
        raise ProtocolError(name, message, None)
    if length > max_batch_rows:
        raise ProtocolError(
            name,
            f"a batch may hold at most {max_batch_rows} rows",
            {"minimum": 1, "maximum": max_batch_rows},
            status=413,
        )


def _requested_outputs(outputs: Any, flags: Sequence[str]) -> tuple[str, ...]:
    if outputs is None:
        return tuple(flags)
    if not isinstance(outputs, list) or not outputs:
        raise ProtocolError("outputs", "'outputs' must be a non-empty array", list(flags))
    wanted = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in flags:
            shown = name if isinstance(name, str) else None
            message = f"unknown output tensor {name!r}; the model gives one per flag"
            raise ProtocolError(shown, message, list(flags))
        if name not in wanted:
            wanted.append(name)
    return tuple(wanted)


def infer_response(
    name: str,
    version: str,
    request: InferRequest,
    probabilities: Sequence[Mapping[str, float]],
) -> dict[str, Any]:
    """One FP64 tensor of shape ``[batch]`` per requested flag."""
    response: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "outputs": [
            {
                "name": flag,
                "datatype": OUTPUT_DATATYPE,
                "shape": [len(probabilities)],
                "data": [row[flag] for row in probabilities],
            }
            for flag in request.outputs
        ],
    }
    if request.request_id is not None:
        response["id"] = request.request_id
    return response
