"""What the gunicorn worker answers for each error gunicorn raises: status, JSON shape, limits."""

import json

import pytest
from gunicorn.config import Config
from gunicorn.http import errors

from batcomputer_server import worker


@pytest.fixture
def cfg():
    config = Config()
    config.set("limit_request_line", 4094)
    config.set("limit_request_fields", 100)
    config.set("limit_request_field_size", 8190)
    return config


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (errors.LimitRequestLine(5000, 4094), 414, "longer than 4094 bytes"),
        (errors.LimitRequestHeaders("limit request headers fields"), 431, "request headers"),
        (errors.InvalidHTTPVersion((2, 0)), 400, "unsupported HTTP version"),
        (errors.InvalidRequestLine("GET /"), 400, "malformed request line"),
        (errors.InvalidRequestMethod("G ET"), 400, "malformed request line"),
        (errors.InvalidHeader("CONTENT-LENGTH"), 400, "CONTENT-LENGTH"),
        (errors.InvalidHeaderName("X A"), 400, "malformed request"),
        (errors.ObsoleteFolding(" folded"), 400, "malformed request"),
        (errors.InvalidChunkSize(b"zz"), 400, "malformed chunked body"),
        (errors.ChunkMissingTerminator(b"xx"), 400, "malformed chunked body"),
        (errors.UnsupportedTransferCoding("gzip2"), 501, "unsupported Transfer-Encoding"),
        (errors.ExpectationFailed("200-ok"), 417, "unsupported Expect"),
        (RuntimeError("a bug of ours"), 500, "internal error"),
    ],
)
def test_each_parse_error_has_its_status_and_a_message(cfg, error, status, words):
    got_status, message, _allowed = worker.describe(error, cfg)
    assert got_status == status
    assert words in message


def test_limits_are_named_in_allowed(cfg):
    assert worker.describe(errors.LimitRequestLine(5000, 4094), cfg)[2] == {"maximum": 4094}
    assert worker.describe(errors.LimitRequestHeaders("x"), cfg)[2] == {
        "max_fields": 100,
        "max_field_bytes": 8190,
    }


def test_a_long_message_from_a_client_is_cut_short(cfg):
    _, message, _ = worker.describe(errors.InvalidRequestLine("x" * 5000), cfg)
    assert len(message) < 400


def test_the_error_answer_is_whole_http_with_the_json_shape_and_closes():
    answer = worker.error_response(408, "the request body did not arrive within 1 s")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert "Connection: close" in lines and "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {
        "error": "the request body did not arrive within 1 s",
        "field": None,
        "allowed": None,
    }
