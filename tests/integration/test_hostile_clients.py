"""The real server (gunicorn, 2 gevent workers) against slow, broken and hostile clients.

Raw sockets, so nothing smooths over what a careless or hostile client sends. Every
answer the server gives is the app's JSON error shape with the right status, never an
HTML page, a 500 or a hang; and a normal request made while an attack holds its
connections open is still answered at once. The server runs with one-second limits so
the module stays quick.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _server_process import PASSENGER, RunningServer, running_server, wait_until_workers_loaded

LIMITS = ("--keepalive", "1", "--header-timeout", "1", "--body-timeout", "1")
MAX_BODY_BYTES = 4096
FAST = 2.0  # seconds; a generous bound for "answered at once", not a benchmark
BODY = json.dumps(PASSENGER).encode()
PREDICT = (
    b"POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n" % len(BODY)
)
JSON_POST = b"POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
CHUNKED_POST = JSON_POST + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("hostile")
    limits = (*LIMITS, "--max-body-bytes", str(MAX_BODY_BYTES))
    with running_server(trained_bundles.titanic, workdir, *limits) as running:
        wait_until_workers_loaded(running)
        yield running
    # Nothing any client sent made the server fail.
    assert "Traceback" not in running.log_text()
    assert "Error handling request" not in running.log_text()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def _connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def _answers(data: bytes) -> list[Answer]:
    """Parse one or more HTTP/1.1 answers with Content-Length bodies."""
    answers = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, f"an incomplete answer: {head!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        answers.append(Answer(int(status_line.split()[1]), headers, data[:length]))
        data = data[length:]
    return answers


def _exchange(server: RunningServer, request: bytes, *, half_close: bool = False) -> Answer:
    with _connect(server) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        answers = _answers(_read_until_closed(sock))
    assert time.monotonic() - started < 5, "the answer took too long"
    assert len(answers) == 1, answers
    return answers[0]


def _assert_json_error(answer: Answer, status: int, words: str) -> dict:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) >= {"error", "field", "allowed"}
    assert words in body["error"], body
    return body


def _assert_normal_request_is_fast(server: RunningServer) -> None:
    started = time.monotonic()
    response = httpx.post(server.url + "/api/predict", json=PASSENGER, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and set(response.json()) == {"died", "survived"}
    assert elapsed < FAST, f"a normal request took {elapsed:.2f} s during the attack"


@contextmanager
def _open_connections(server: RunningServer, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [stack.enter_context(_connect(server)) for _ in range(count)]


# -- slow clients hold a socket, not a worker ---------------------------------------


def test_slowloris_headers_get_a_408_and_do_not_stall_others(server):
    with _open_connections(server, 20) as attackers:
        for sock in attackers:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        for _ in range(3):  # a header line now and then, never the end of the headers
            time.sleep(0.3)
            for sock in attackers:
                sock.sendall(b"X-Slow: 1\r\n")
            _assert_normal_request_is_fast(server)
        for sock in attackers:
            answer = _answers(_read_until_closed(sock))[0]
            _assert_json_error(answer, 408, "headers did not arrive within 1 s")
    # Operators see the refusals among the server's metrics, summed over both workers.
    metrics = httpx.get(server.url + "/metrics").text
    refused = re.search(r'^batcomputer_http_refused_total\{status="408"\} (\S+)$', metrics, re.M)
    assert refused and float(refused.group(1)) >= 20


def test_a_slow_body_gets_a_408_and_does_not_stall_others(server):
    with _open_connections(server, 20) as attackers:
        for sock in attackers:
            sock.sendall(JSON_POST + b"Content-Length: 100\r\n\r\n" + BODY[:10])
        _assert_normal_request_is_fast(server)
        for sock in attackers:
            answer = _answers(_read_until_closed(sock))[0]
            _assert_json_error(answer, 408, "body did not arrive within 1 s")


def test_an_unterminated_chunked_body_gets_a_408(server):
    with _open_connections(server, 10) as attackers:
        for sock in attackers:
            sock.sendall(CHUNKED_POST + b"5\r\n" + BODY[:5] + b"\r\n")
        _assert_normal_request_is_fast(server)
        for sock in attackers:
            answer = _answers(_read_until_closed(sock))[0]
            _assert_json_error(answer, 408, "body did not arrive within 1 s")


def test_a_thousand_idle_connections_cost_no_worker_and_are_closed(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    try:
        with _open_connections(server, 1000) as idle:
            _assert_normal_request_is_fast(server)
            # Closed after --keepalive without an answer (there was no request to answer).
            deadline = time.monotonic() + 10
            open_ = list(idle)
            while open_ and time.monotonic() < deadline:
                readable, _, _ = select.select(open_, [], [], 0.5)
                for sock in readable:
                    assert sock.recv(1) == b""
                    open_.remove(sock)
            assert not open_, f"{len(open_)} idle connections still open"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- broken framing ---------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_a_400_when_the_client_stops(server):
    request = JSON_POST + b"Content-Length: 500\r\n\r\n" + BODY
    answer = _exchange(server, request, half_close=True)
    _assert_json_error(answer, 400, "ended before its Content-Length")


def test_a_chunked_body_cut_off_before_its_last_chunk_is_a_400(server):
    request = CHUNKED_POST + b"5\r\n" + BODY[:5] + b"\r\n"
    answer = _exchange(server, request, half_close=True)
    _assert_json_error(answer, 400, "ended before it was complete")


@pytest.mark.parametrize(
    ("chunks", "status", "words"),
    [
        (b"zz\r\n" + BODY + b"\r\n", 400, "malformed chunked body"),
        (b"-1\r\n" + BODY + b"\r\n", 400, "malformed chunked body"),
        (b"0x10\r\n" + BODY + b"\r\n", 400, "malformed chunked body"),
        (b"5\r\n" + BODY + b"\r\n", 400, "malformed chunked body"),  # longer than its size
        (b"ffffffffffff\r\n" + BODY + b"\r\n", 413, "larger than 4096 bytes"),
        ((b"1000\r\n" + b" " * 4096 + b"\r\n") * 2, 413, "larger than 4096 bytes"),
    ],
    ids=["zz", "negative", "0x-prefix", "overrun", "huge", "too-many-in-all"],
)
def test_bad_chunk_sizes_are_named_4xx(server, chunks, status, words):
    request = CHUNKED_POST + chunks + b"0\r\n\r\n"
    _assert_json_error(_exchange(server, request, half_close=True), status, words)


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (JSON_POST + b"Content-Length: -5\r\n\r\n", 400, "CONTENT-LENGTH"),
        (JSON_POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400, "CONTENT-LENGTH"),
        (JSON_POST + b"Content-Length: 1e3\r\n\r\n", 400, "CONTENT-LENGTH"),
        (
            JSON_POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "CONTENT-LENGTH",
        ),
        (JSON_POST + b"Content-Length: 99999999\r\n\r\n" + BODY, 413, "larger than 4096 bytes"),
        (JSON_POST + b"Connection: close\r\n\r\n", 411, "send a Content-Length"),
        (JSON_POST + b"Transfer-Encoding: foo\r\n\r\n", 501, "unsupported Transfer-Encoding"),
    ],
    ids=["negative", "duplicate", "not-a-number", "both-framings", "too-large", "none", "unknown"],
)
def test_bad_body_framing_is_a_named_4xx(server, request_bytes, status, words):
    _assert_json_error(_exchange(server, request_bytes, half_close=True), status, words)


# -- malformed and oversize request heads -------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-A: a\x00b\r\n\r\n", 400, "X-A"),
        (b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-A: a\rb\r\n\r\n", 400, "X-A"),
        (b"GET /healthz HTTP/1.1\r\nHost: test\r\nX A: b\r\n\r\n", 400, "malformed request"),
        (b"GET /healthz HTTP/1.1\r\nHost: test\r\n folded\r\n\r\n", 400, "malformed request"),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: test\r\n\r\n", 414, "longer than 4094"),
        (b"GET /healthz HTTP/1.1\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 431, "headers"),
        (
            b"GET /healthz HTTP/1.1\r\n"
            + b"".join(b"X-%d: a\r\n" % i for i in range(150))
            + b"\r\n",
            431,
            "headers",
        ),
        (b"GET /healthz\r\n\r\n", 400, "malformed request line"),
        (b"GET /healthz HTTP/2.0\r\nHost: test\r\n\r\n", 400, "unsupported HTTP version"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "malformed request line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "malformed request"),
    ],
    ids=[
        "nul-in-header",
        "cr-in-header",
        "space-in-name",
        "obsolete-folding",
        "long-url",
        "long-header",
        "many-headers",
        "http-0.9",
        "http-2.0",
        "h2-preface",
        "tls-hello",
    ],
)
def test_malformed_and_oversize_heads_are_named_4xx(server, request_bytes, status, words):
    body = _assert_json_error(_exchange(server, request_bytes, half_close=True), status, words)
    if status in (414, 431):
        assert body["allowed"], "the limit is named"


def test_a_wrong_method_is_a_405_naming_the_allowed_ones(server):
    answer = _exchange(
        server, b"DELETE /api/predict HTTP/1.1\r\nHost: test\r\n\r\n", half_close=True
    )
    assert _assert_json_error(answer, 405, "use POST")["allowed"] == ["POST"]
    assert answer.headers["allow"] == "OPTIONS, POST"


# -- well-formed but unusual use of a connection ------------------------------------


def test_pipelined_requests_are_answered_in_order(server):
    batch = json.dumps([PASSENGER, PASSENGER]).encode()
    request = (
        PREDICT + b"\r\n" + BODY
        + b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
        + JSON_POST + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(batch) + batch
    )  # fmt: skip
    with _connect(server) as sock:
        sock.sendall(request)
        first, second, third = _answers(_read_until_closed(sock))
    assert (first.status, second.status, third.status) == (200, 200, 200)
    assert set(first.json()) == {"died", "survived"}
    assert second.json() == {"status": "alive"}
    assert third.json() == [first.json(), first.json()]


_PLAIN_REQUESTS = {
    "prediction": PREDICT + b"\r\n" + BODY,
    "refused input": JSON_POST + b'Content-Length: 11\r\n\r\n{"age": -1}',
    "health": b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n",
    "wrong method": b"GET /api/predict?x=1 HTTP/1.1\r\nHost: test\r\n\r\n",
    "no such page": b"GET /nowhere HTTP/1.1\r\nHost: test\r\nAccept: a\r\nAccept: b\r\n\r\n",
    "no length": JSON_POST + b"\r\n",
}


_PIECES = [
    pytest.param(request_bytes, "head", id=f"{name}, head in pieces")
    for name, request_bytes in _PLAIN_REQUESTS.items()
] + [
    pytest.param(request_bytes, "body", id=f"{name}, body in pieces")
    for name, request_bytes in _PLAIN_REQUESTS.items()
    if not request_bytes.endswith(b"\r\n\r\n")
]


@pytest.mark.parametrize(("request_bytes", "cut_in"), _PIECES)
def test_an_answer_is_the_same_whether_the_request_arrived_whole_or_in_pieces(
    server, request_bytes, cut_in
):
    # A request whose head arrives in one piece is answered without gunicorn's request
    # objects (its body read to its end first); one whose head trickles in goes through
    # them. The caller cannot tell which.
    request_bytes = request_bytes.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    cut = 10 if cut_in == "head" else request_bytes.index(b"\r\n\r\n") + 5
    whole = _exchange(server, request_bytes)
    with _connect(server) as sock:
        sock.sendall(request_bytes[:cut])
        time.sleep(0.2)
        sock.sendall(request_bytes[cut:])
        (in_pieces,) = _answers(_read_until_closed(sock))
    assert whole.status == in_pieces.status
    assert whole.body == in_pieces.body
    del whole.headers["date"], in_pieces.headers["date"]
    assert whole.headers == in_pieces.headers


def test_a_half_closed_client_still_gets_its_whole_answer(server):
    answer = _exchange(server, PREDICT + b"\r\n" + BODY, half_close=True)
    assert answer.status == 200 and set(answer.json()) == {"died", "survived"}


def test_a_client_that_disconnects_mid_request_costs_nothing(server):
    for partial in (b"GET /heal", PREDICT + b"\r\n" + BODY[:5]):
        with _connect(server) as sock:
            sock.sendall(partial)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    _assert_normal_request_is_fast(server)


# -- shutdown and worker loss -------------------------------------------------------


def _worker_pids(server: RunningServer) -> set[int]:
    pid = server.process.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _listening_sockets(server: RunningServer) -> int:
    """How many sockets listen on the server's port: one per worker that has loaded its app."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server.port and fields[3] == "0A":
            count += 1
    return count


def _wait_until_listening(server: RunningServer, workers: int = 2) -> None:
    deadline = time.monotonic() + 60
    while _listening_sockets(server) < workers:
        assert time.monotonic() < deadline, "the workers never all listened"
        time.sleep(0.1)


def _owner(server: RunningServer, sock: socket.socket, workers: set[int]) -> int:
    """The worker holding the server end of ``sock`` (by its socket inode)."""
    client_port = sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server.port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            inode = fields[9]
    assert inode is not None
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if fd.readlink().name == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def _request_on(sock: socket.socket) -> Answer:
    sock.sendall(PREDICT + b"\r\n" + BODY)
    received = b""
    while b"\r\n\r\n" not in received or not received.endswith(b"}"):
        data = sock.recv(65536)
        assert data, "the connection was closed"
        received += data
    return _answers(received)[0]


def test_sigterm_finishes_requests_in_flight_and_closes_idle_connections(trained_bundles, tmp_path):
    limits = ("--keepalive", "30", "--header-timeout", "30", "--body-timeout", "30")
    # One worker: of two, the one holding the request in flight may take its SIGTERM
    # after the other has already closed the idle connection and the test sent the rest.
    with running_server(trained_bundles.titanic, tmp_path, *limits, workers=1) as running:
        wait_until_workers_loaded(running, workers=1)
        idle = _connect(running)
        in_flight = _connect(running)
        with idle, in_flight:
            assert _request_on(idle).status == 200  # now a kept-alive connection
            in_flight.sendall(PREDICT + b"\r\n" + BODY[:10])
            time.sleep(0.3)
            running.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            # The idle connection is closed at once, without an answer.
            assert _read_until_closed(idle, timeout=5) == b""
            assert time.monotonic() - started < FAST
            # The request in flight is answered in full, and told the connection closes.
            in_flight.sendall(BODY[10:])
            (answer,) = _answers(_read_until_closed(in_flight))
            assert answer.status == 200 and set(answer.json()) == {"died", "survived"}
            assert answer.headers["connection"] == "close"
        assert running.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10, "the server took its whole graceful timeout"
        with pytest.raises(OSError):
            _connect(running)


def test_a_dead_worker_is_replaced_without_dropping_the_other_workers_connections(
    trained_bundles, tmp_path
):
    limits = ("--keepalive", "60", "--header-timeout", "30", "--body-timeout", "30")
    with running_server(trained_bundles.titanic, tmp_path, *limits) as running:
        wait_until_workers_loaded(running)
        _wait_until_listening(running)
        workers = _worker_pids(running)
        with _open_connections(running, 12) as connections:
            owners = {}
            for sock in connections:
                assert _request_on(sock).status == 200
                owners[sock] = _owner(running, sock, workers)
            assert set(owners.values()) == workers, "the kernel spread them over both workers"
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            for sock, owner in owners.items():
                if owner != victim:
                    assert _request_on(sock).status == 200
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                replaced = _worker_pids(running)
                if len(replaced) == 2 and victim not in replaced:
                    break
                time.sleep(0.2)
            assert len(replaced) == 2 and victim not in replaced
            # Until the replacement has loaded the bundle the other worker takes every
            # new connection; then both do again.
            _assert_normal_request_is_fast(running)
            _wait_until_listening(running)
            _assert_normal_request_is_fast(running)
