"""The operator reads a real server's /metrics page; a hostile or broken "pod" (a raw socket
server in this test) is a ScrapeError naming it, within the time limit, never a hang."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from _server_process import free_port, running_server, wait_until_workers_loaded

from batcomputer_operator import analysis
from batcomputer_operator.scrape import ScrapeError, scrape


def test_a_real_servers_page(trained_bundles, tmp_path):
    with running_server(trained_bundles.titanic, tmp_path) as server:
        wait_until_workers_loaded(server)
        for _ in range(5):
            httpx.post(server.url + "/api/predict", json={"sex": "female"})  # 400s
        found = scrape("127.0.0.1", port=server.port)
    measured = analysis.canary_measurement(analysis.growth(None, found))
    assert (measured.requests, measured.errors) == (5, 0)
    assert found.total("batcomputer_input_errors_total", status="400") == 5


class _Pod:
    """A listening socket whose every connection `answer` handles."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self._answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(4096)
            with contextlib.suppress(OSError):  # the client gave up first
                self._answer(connection)

    def close(self) -> None:
        self.socket.close()


def _reply(status: str, body: bytes, extra: bytes = b"") -> Callable[[socket.socket], None]:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return lambda connection: connection.sendall(head + extra + b"\r\n" + body)


def _endless(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    line = b'x_total{a="1"} 1\n' * 4096
    while True:
        connection.sendall(line)


def _drip(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    for _ in range(100):
        connection.sendall(b"#")
        time.sleep(0.2)


def _silent(connection: socket.socket) -> None:
    time.sleep(10)


def _hang_up(connection: socket.socket) -> None:
    connection.close()


HOSTILE = [
    ("not found", _reply("404 Not Found", b"no"), "answered 404"),
    ("server error", _reply("500 Internal Server Error", b""), "answered 500"),
    ("not HTTP", lambda c: c.sendall(b"SSH-2.0-OpenSSH\r\n"), "/metrics:"),
    ("hangs up", _hang_up, "/metrics:"),
    ("endless page", _endless, "larger than 65536 bytes"),
    ("drips a byte at a time", _drip, "no answer within 1.0s"),
    ("never answers", _silent, "no answer within 1.0s"),
    ("not UTF-8", _reply("200 OK", b"x_total 1\n\xff\xfe\n"), "codec can't decode"),
    ("not Prometheus text", _reply("200 OK", b'x{a="1} 1\n'), "not Prometheus text"),
    ("a NaN count", _reply("200 OK", b"x_total NaN\n"), None),
]


@pytest.mark.parametrize(("why", "answer", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_pod_is_a_scrape_error_in_time(why, answer, message):
    pod = _Pod(answer)
    started = time.monotonic()
    try:
        if message is None:
            # Parsed, but refused as a count where it is used.
            with pytest.raises(analysis.MetricsError, match="not a count"):
                analysis.growth(None, scrape("127.0.0.1", port=pod.port, timeout_seconds=1.0))
            return
        with pytest.raises(ScrapeError) as caught:
            scrape("127.0.0.1", port=pod.port, timeout_seconds=1.0, max_bytes=65536)
    finally:
        pod.close()
    assert f"127.0.0.1:{pod.port}/metrics" in str(caught.value)
    assert message in str(caught.value), str(caught.value)
    assert time.monotonic() - started < 3.0, why


def test_nothing_listening():
    port = free_port()
    with pytest.raises(ScrapeError, match=f"127.0.0.1:{port}/metrics: .*refused"):
        scrape("127.0.0.1", port=port, timeout_seconds=1.0)


@pytest.mark.parametrize("address", ["pod.example", "10.0.0.1; rm -rf /", "", "10.0.0.256"])
def test_only_an_ip_address_is_scraped(address):
    with pytest.raises(ScrapeError, match="is not a pod IP address"):
        scrape(address)
