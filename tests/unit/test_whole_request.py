"""``read_plain_head`` takes only plain requests, and they read as gunicorn reads them.

Every request it takes is parsed by gunicorn's own parser on the same bytes and must come
out the same: method, path, query, headers, body, where the next request starts and
whether the connection closes after it. Anything gunicorn would refuse, or treat in a way
of its own, must be left to gunicorn (None).
"""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batcomputer_server.whole_request import HeadLimits, WholeRequest, read_plain_head

pytestmark = pytest.mark.unit

LIMITS = HeadLimits(request_line=4094, fields=100, field_bytes=8190)
MAX_BODY = 2048
PLAIN = (
    b"POST /api/predict HTTP/1.1\r\nHost: model\r\nContent-Type: application/json\r\n"
    b'Content-Length: 7\r\n\r\n{"a":1}'
)


def read_whole(data: bytes) -> WholeRequest | None:
    """The request the worker answers itself once ``data`` holds all of it."""
    head = read_plain_head(data, LIMITS, MAX_BODY)
    if head is None:
        return None
    return head.request(data) if len(data) >= head.request_bytes else None


def _gunicorn_reads(data: bytes):
    parser = RequestParser(Config(), iter([data]), ("127.0.0.1", 5000))
    request = next(parser)
    body = request.body.read()
    rest = parser.unreader.take_buffered()
    return request, body, rest


def _same_as_gunicorn(data: bytes) -> None:
    whole = read_whole(data)
    assert whole is not None
    request, body, rest = _gunicorn_reads(data)
    head = whole.head
    assert (head.method, head.path, head.query) == (request.method, request.path, request.query)
    assert head.target == request.uri
    assert head.headers == request.headers
    assert whole.body == body
    assert whole.rest == rest
    assert whole.close == request.should_close()


def test_a_plain_json_post_is_read_whole_as_gunicorn_reads_it():
    _same_as_gunicorn(PLAIN)
    whole = read_whole(PLAIN)
    assert whole.body == b'{"a":1}' and whole.rest == b"" and not whole.close


def test_a_get_with_a_query_and_a_pipelined_request_behind_it():
    data = b"GET /api/info?x=1&y=a/b HTTP/1.1\r\nHost: m\r\nAccept: */*\r\n\r\n" + PLAIN
    _same_as_gunicorn(data)
    whole = read_whole(data)
    assert (whole.head.path, whole.head.query, whole.rest) == ("/api/info", "x=1&y=a/b", PLAIN)


def test_repeated_headers_and_connection_close_are_read_as_gunicorn_reads_them():
    _same_as_gunicorn(
        b"GET /healthz HTTP/1.1\r\nAccept: a\r\naccept:  b \r\nConnection: Close\r\n\r\n"
    )
    assert read_whole(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close


def test_a_plain_head_whose_body_is_on_its_way_says_how_many_bytes_the_request_takes():
    head = read_plain_head(PLAIN[:-3], LIMITS, MAX_BODY)
    assert head.request_bytes == len(PLAIN)
    assert head.request(PLAIN + b"GET").body == b'{"a":1}'
    assert head.request(PLAIN + b"GET").rest == b"GET"
    assert not head.request(PLAIN).close
    # The client stopped sending: the app gets the short body, the connection closes.
    cut_short = head.request(PLAIN[:-3])
    assert (cut_short.body, cut_short.rest, cut_short.close) == (b'{"a"', b"", True)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PLAIN.split(b"\r\n\r\n")[0], id="head still on its way"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="HTTP/1.0"),
        pytest.param(b"GET / HTTP/2.0\r\n\r\n", id="HTTP/2.0"),
        pytest.param(b"GET /\r\n\r\n", id="HTTP/0.9"),
        pytest.param(b"get / HTTP/1.1\r\n\r\n", id="lower-case method"),
        pytest.param(b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", id="another method"),
        pytest.param(b"HEAD / HTTP/1.1\r\n\r\n", id="HEAD"),
        pytest.param(b"GET /a%2Fb HTTP/1.1\r\n\r\n", id="percent escape"),
        pytest.param(b"GET //evil.example/x HTTP/1.1\r\n\r\n", id="double slash"),
        pytest.param(b"GET /a#frag HTTP/1.1\r\n\r\n", id="fragment"),
        pytest.param(b"GET http://x/ HTTP/1.1\r\n\r\n", id="absolute form"),
        pytest.param(b"GET * HTTP/1.1\r\n\r\n", id="asterisk form"),
        pytest.param(b"GET  / HTTP/1.1\r\n\r\n", id="two spaces"),
        pytest.param(b"GET / HTTP/1.1\r\nX_Y: 1\r\n\r\n", id="underscore in a name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", id="space before the colon"),
        pytest.param(b"GET / HTTP/1.1\r\n: x\r\n\r\n", id="empty name"),
        pytest.param(b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", id="folded line"),
        pytest.param(b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n", id="NUL in a value"),
        pytest.param(b"GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", id="CR in a value"),
        pytest.param(b"GET / HTTP/1.1\r\nA: x\ny\r\n\r\n", id="LF in a value"),
        pytest.param(b"GET / HTTP/1.1\r\nA: caf\xc3\xa9\r\n\r\n", id="non-ASCII value"),
        pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", id="bare LF lines"),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="chunked"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            id="Content-Length twice",
        ),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx", id="signed length"),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 01\r\n\r\nx", id="leading zero"),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\nxx", id="two lengths"),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0x1\r\n\r\nx", id="hex length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 2049\r\n\r\n" + b"x" * 2049, id="over the limit"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", id="Expect"),
        pytest.param(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", id="Upgrade"),
        pytest.param(b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n", id="Connection upgrade"),
        pytest.param(b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n", id="forwarded scheme"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="Host twice"),
        pytest.param(b"GET /" + b"a" * 4094 + b" HTTP/1.1\r\n\r\n", id="request line too long"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 101 + b"\r\n", id="101 headers"),
        pytest.param(b"GET / HTTP/1.1\r\nA: " + b"x" * 8190 + b"\r\n\r\n", id="header too long"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n", id="PROXY"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_anything_but_a_plain_request_is_left_to_gunicorn(data):
    assert read_whole(data) is None


_TOKEN = st.text("abcXYZ019-!#$%&'*+.^`|~", min_size=1, max_size=8)
_VALUE = st.text("".join(map(chr, range(0x20, 0x7F))) + "\t", max_size=20)
_PATH = st.text("abz09-._~!$&'()*+,;=:@/?%#", max_size=20)


@st.composite
def _requests(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "get"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    body = draw(st.binary(max_size=30))
    headers = draw(st.lists(st.tuples(_TOKEN, _VALUE), max_size=5))
    if draw(st.booleans()):
        lengths = [str(len(body)), str(len(body) + 9), "0", "007"]
        headers.append(("Content-Length", draw(st.sampled_from(lengths))))
    if draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "Close"]))))
    head = f"{method} /{draw(_PATH)} {version}\r\n" + "".join(
        f"{name}:{value}\r\n" for name, value in headers
    )
    return head.encode("latin-1") + b"\r\n" + body + draw(st.sampled_from([b"", PLAIN]))


@settings(max_examples=400, deadline=None)
@given(_requests())
@example(b"GET /a?b?c HTTP/1.1\r\nA:\r\nB: \t x \t\r\n\r\n")
def test_what_is_read_whole_gunicorn_reads_the_same_way(data):
    head = read_plain_head(data, LIMITS, MAX_BODY)
    if head is not None:
        # A body still on its way is read to its end before the request is answered.
        _same_as_gunicorn(data + b"x" * (head.request_bytes - len(data)))
