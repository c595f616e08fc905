"""POST /api/predict as bytes in, status and JSON bytes out, and the one JSON error shape.

Every error the server gives, whether the app, the WSGI middleware or the gunicorn
worker produces it, is ``{"error", "field", "allowed"}`` built here. Nothing in this
module knows of Flask, WSGI or sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from batcomputer_server.metrics import Metrics
from batcomputer_server.predictor import DecodedBatch, InputError, Predictor

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def encode(payload: Any) -> bytes:
    return orjson.dumps(payload)


def labelled_rows(flags: Sequence[str], probabilities: np.ndarray) -> bytes:
    """``[{flag: p, ...}, ...]`` for an ``(n, len(flags))`` float64 matrix, as ``encode`` would
    write the same rows as dicts, byte for byte.

    Building a dict per row cost more than the model on a 1,000-row batch: instead orjson
    writes the numbers, ``[[a,b],[c,d]]``, and the keys are threaded in between with list
    slicing and one join, none of it a Python loop.
    """
    rows, width = probabilities.shape
    numbers = orjson.dumps(probabilities, option=orjson.OPT_SERIALIZE_NUMPY)
    # No number contains a comma or a bracket: strip "[[" and "]]", then every "],[" ends a row.
    values = numbers[2:-2].replace(b"],[", b",").split(b",")
    keys = [orjson.dumps(flag) + b":" for flag in flags]
    # Before each row's first value "},{" closes the row before (except the first row's);
    # before every other value a comma.
    separators = [b"},{" + keys[0], *(b"," + key for key in keys[1:])] * rows
    separators[0] = b"{" + keys[0]
    parts: list[bytes] = [b""] * (2 * rows * width)
    parts[0::2] = separators
    parts[1::2] = values
    return b"[" + b"".join(parts) + b"}]"


def error_body(message: str, allowed: Any = None) -> bytes:
    """An error that concerns no single input field (those come from ``InputError``)."""
    return encode({"error": message, "field": None, "allowed": allowed})


def status_line(status: int) -> str:
    return f"{status} {REASONS[status]}"


class _MalformedJSONError(ValueError):
    pass


def _parse_body(body: bytes) -> Any:
    # orjson refuses NaN, Infinity, invalid UTF-8 and nesting deeper than 1024 by itself.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _MalformedJSONError(f"the request body is not valid JSON: {error}") from None


class Scorer:
    """POST /api/predict from content type and body to status and JSON bytes."""

    def __init__(
        self,
        predictor: Predictor | None,
        metrics: Metrics,
        max_batch_rows: int,
        load_error: str | None,
        observe_rows: Callable[[Any], None] | None = None,
        *,
        mirror: Callable[[bytes, Any], None] | None = None,
    ) -> None:
        self._predictor = predictor
        # Shadow traffic gets the body and the answer once the caller's is settled.
        self._mirror = mirror
        # Input drift sees every parsed body, refused or not (see drift.py).
        self._observe_rows = observe_rows
        self._metrics = metrics
        self._max_batch_rows = max_batch_rows
        self._load_error = load_error
        # A valid batch skips orjson and encode_many; anything else takes that way to
        # the very answer it always got.
        self._decode_batch = (
            predictor.batch_decoder(max_batch_rows) if predictor is not None else None
        )

    def score(self, mimetype: str, body: bytes, *, copy: bool = False) -> tuple[int, bytes]:
        """``copy``: the request is another server's shadow copy, never copied on."""
        predictor = self._predictor
        if predictor is None:
            return 503, error_body(f"the model is not ready: {self._load_error}")
        if mimetype != "application/json":
            return 415, error_body("send the inputs as JSON with Content-Type: application/json")
        if self._decode_batch is not None:
            batch = self._decode_batch(body)
            if batch is not None:
                return self._score_batch(predictor, batch, body, copy)
        try:
            inputs = _parse_body(body)
            if self._observe_rows is not None:
                self._observe_rows(inputs)
            if type(inputs) is list:
                if len(inputs) > self._max_batch_rows:
                    limit = {"minimum": 1, "maximum": self._max_batch_rows}
                    message = f"a batch may hold at most {self._max_batch_rows} rows"
                    return 413, error_body(message, allowed=limit)
                probabilities = predictor.probabilities_many(inputs)
            else:
                result = predictor.predict_one(inputs)
        except _MalformedJSONError as error:
            return 400, error_body(str(error))
        except InputError as error:
            refusal = {"error": str(error), "field": error.field, "allowed": error.allowed}
            if error.row is not None:
                refusal["row"] = error.row
            return 400, encode(refusal)
        if type(inputs) is list:
            return self._answer_batch(predictor, len(inputs), probabilities, body, copy)
        self._metrics.predicted_rows.inc()
        if self._mirror is not None and not copy:
            self._mirror(body, result)
        return 200, encode(result)

    def _score_batch(
        self, predictor: Predictor, batch: DecodedBatch, body: bytes, copy: bool
    ) -> tuple[int, bytes]:
        if self._observe_rows is not None:
            self._observe_rows(batch)
        probabilities = predictor.probabilities(batch.matrix)
        return self._answer_batch(predictor, len(batch), probabilities, body, copy)

    def _answer_batch(
        self, predictor: Predictor, rows: int, probabilities: np.ndarray, body: bytes, copy: bool
    ) -> tuple[int, bytes]:
        self._metrics.predicted_rows.inc(rows)
        payload = labelled_rows(predictor.flags, probabilities)
        if self._mirror is not None and not copy:
            # Only a shadowed server needs the batch's answer as objects.
            self._mirror(body, predictor.labelled(probabilities))
        return 200, payload
