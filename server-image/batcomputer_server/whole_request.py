"""The plain request: read without gunicorn's per-request machinery.

Almost every request a model server gets is a GET or a JSON POST over HTTP/1.1 whose
head arrives in one read. For those, gunicorn's parser, body readers, environ builder and
response object cost a worker about as much CPU as the model, the validation and the
JSON together. ``read_plain_head`` recognises such a head in the bytes already received
and says how many bytes the whole request takes (the worker reads the rest of a
``Content-Length`` body itself, under the same deadline as gunicorn's way);
``PlainHead.request`` gives what the app needs once they are there. For anything else (a
head still on its way, a chunked body, ``Expect``, ``Upgrade``, percent-escapes,
forwarded-scheme headers, HTTP/1.0, another method, anything unusual or malformed) it
gives None and the worker hands the bytes to gunicorn's parser unchanged, so every
refusal and every limit stays gunicorn's and the worker's.

What it accepts is a strict subset of what gunicorn's parser accepts and reads the same
way (``tests/unit/test_whole_request.py`` compares the two on the same bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9110 token characters, without "_": gunicorn drops headers whose names hold one.
_HEADER = re.compile(rb"([!#$%&'*+.^`|~0-9A-Za-z-]+):[ \t]*((?:[!-~]+(?:[ \t]+[!-~]+)*)?)[ \t]*")
# Absolute paths of RFC 3986 characters, an optional query; no escapes, no fragment.
_PATH_CHARACTERS = rb"[A-Za-z0-9._~!$&'()*+,;=:@/-]"
_REQUEST_LINE = re.compile(
    rb"(GET|POST) (/(?!/)"
    + _PATH_CHARACTERS
    + rb"*)(?:\?((?:"
    + _PATH_CHARACTERS
    + rb"|\?)*))? HTTP/1\.1"
)
_LENGTH = re.compile(rb"0|[1-9][0-9]{0,14}")
# Headers gunicorn gives a meaning beyond the environ: its own path handles them.
_GUNICORN_HEADERS = frozenset(
    {
        b"TRANSFER-ENCODING",
        b"EXPECT",
        b"UPGRADE",
        b"HTTP2-SETTINGS",
        b"FORWARDED",
        b"X-FORWARDED-PROTO",
        b"X-FORWARDED-PROTOCOL",
        b"X-FORWARDED-SSL",
        b"PROXY",
    }
)
# Repeats gunicorn refuses, or that could be read two ways.
_SINGLE = frozenset({b"CONTENT-LENGTH", b"CONNECTION", b"HOST"})
_END_OF_HEAD = b"\r\n\r\n"


@dataclass(frozen=True)
class HeadLimits:
    """gunicorn's limits on a request head; a head near them goes gunicorn's way."""

    request_line: int
    fields: int
    field_bytes: int


@dataclass(frozen=True)
class PlainHead:
    method: str
    target: str
    path: str
    query: str
    # (NAME upper-cased, value) in arrival order, as gunicorn gives them.
    headers: list[tuple[str, str]]
    # The client asked to close.
    close: bool
    body_start: int
    body_length: int

    @property
    def request_bytes(self) -> int:
        """How many bytes, from the start of the head, the whole request takes."""
        return self.body_start + self.body_length

    def request(self, data: bytes) -> WholeRequest:
        """The request, from ``data`` holding ``request_bytes`` bytes, or fewer where the
        client stopped sending: then its body is short and its connection closes."""
        end = self.request_bytes
        return WholeRequest(
            head=self,
            body=data[self.body_start : end],
            rest=data[end:],
            close=self.close or len(data) < end,
        )


@dataclass(eq=False)  # tracked in a set while in flight, by identity
class WholeRequest:
    head: PlainHead
    body: bytes
    # What followed the request: the start of a pipelined next one.
    rest: bytes
    # The client asked to close, stopped sending, or the server is stopping.
    close: bool

    def force_close(self) -> None:
        self.close = True


def read_plain_head(data: bytes, limits: HeadLimits, max_body_bytes: int) -> PlainHead | None:
    """The head of the plain request at the start of ``data`` if it is all there; else None."""
    end = data.find(_END_OF_HEAD)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines[0]) > limits.request_line or len(lines) - 1 > limits.fields:
        return None
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return None
    headers = []
    length = 0
    close = False
    seen = set()
    for line in lines[1:]:
        header = _HEADER.fullmatch(line)
        if header is None or len(line) > limits.field_bytes:
            return None
        name = header[1].upper()
        if name in _GUNICORN_HEADERS:
            return None
        value = header[2]
        if name == b"CONTENT-LENGTH":
            if _LENGTH.fullmatch(value) is None:
                return None
            length = int(value)
        elif name == b"CONNECTION":
            token = value.lower()
            if token not in (b"keep-alive", b"close"):
                return None
            close = token == b"close"
        if name in _SINGLE:
            if name in seen:
                return None
            seen.add(name)
        headers.append((name.decode("ascii"), value.decode("ascii")))
    if length > max_body_bytes:
        return None
    method, path, query = request_line.groups()
    return PlainHead(
        method=method.decode("ascii"),
        target=lines[0][len(method) + 1 : -len(b" HTTP/1.1")].decode("ascii"),
        path=path.decode("ascii"),
        query=(query or b"").decode("ascii"),
        headers=headers,
        close=close,
        body_start=end + len(_END_OF_HEAD),
        body_length=length,
    )
