"""The gunicorn worker: gevent, so a slow or idle client costs a socket, not a worker.

gunicorn's gevent worker serves each connection in a greenlet; this subclass adds what a
server facing strangers needs, which gunicorn leaves to a buffering proxy in front:

* bounded waits: a connection with no byte of a (next) request is closed after
  ``idle_seconds`` without an answer; once a request starts, its request line and headers
  must arrive within ``header_seconds`` and its body within ``body_seconds``, else 408;
  every socket write is bounded by ``body_seconds`` too;
* every error gunicorn itself answers (framing, limits, timeouts) in the app's JSON shape
  with the right status, never an HTML page or a 500 for a client's mistake;
* a worker listens only once its bundle is loaded: gunicorn opens a worker's own
  listening socket (``reuse_port``) before it loads the app, and the kernel would queue
  new connections on it for the seconds a replacement worker takes to start;
* a chunk announced larger than ``max_body_bytes`` is a 413 at once, not a wait;
* SIGTERM: requests in flight finish (answered with ``Connection: close``) and kept-alive
  connections waiting for a next request are closed at once, so the worker exits as soon
  as its last answer is out;
* connections end with a lingering close, so a refused body still being sent does not
  turn the answer into a connection reset;
* an answer goes out in one send, its head with its body (gunicorn sends them apart: two
  packets and two wake-ups of the client for every small answer), and the request path
  skips the hooks and bookkeeping this server never configures;
* a plain request (``whole_request``: its head arrived in one read; a ``Content-Length``
  body is read to its end here) is answered without gunicorn's per-request objects,
  which cost more than the app; the rest goes gunicorn's way;
* once the bundle is loaded, everything in the worker is frozen out of the garbage
  collector's reach, so the full collections a batch's thousands of objects set off
  do not walk the libraries and the model every time.
"""

from __future__ import annotations

import gc
import io
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import gevent
from gevent import select as gevent_select
from gevent import socket as gevent_socket
from gunicorn import http, util
from gunicorn import sock as gunicorn_sock
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.body import ChunkedReader
from gunicorn.workers.ggevent import GeventWorker

from batcomputer_server import scoring
from batcomputer_server.metrics import refused_requests
from batcomputer_server.whole_request import HeadLimits, WholeRequest, read_plain_head

_MESSAGE_LIMIT = 300
_DRAIN_SECONDS = 1.0
_LINGER_SECONDS = 1.0
_READ_BYTES = 65536
# Answers that carry no body, so no Content-Length either.
_BODILESS_STATUSES = ("1", "204", "304")


@dataclass(frozen=True)
class ClientLimits:
    """How long a client may take; see the module docstring."""

    idle_seconds: float
    header_seconds: float
    body_seconds: float
    max_body_bytes: int


class _Refusal(BaseException):
    """An answer the worker gives instead of the app.

    A BaseException, so no ``except Exception`` in the app or in gunicorn catches it on
    its way from a body read back to the worker.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _late_body_message(seconds: float) -> str:
    return f"the request body did not arrive within {seconds:g} s"


class _DeadlineBody:
    """``wsgi.input`` that must be read within the body deadline and must not end early."""

    def __init__(self, body: Any, seconds: float) -> None:
        self.body = body
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def _call(self, method: str, *args: Any) -> Any:
        late = _Refusal(408, _late_body_message(self._seconds))
        with gevent.Timeout(max(self._deadline - time.monotonic(), 0.001), late):
            try:
                return getattr(self.body, method)(*args)
            except http_errors.NoMoreData:
                raise _Refusal(400, "the request body ended before it was complete") from None

    def read(self, size: int | None = None) -> bytes:
        return self._call("read", size)

    def readline(self, size: int | None = None) -> bytes:
        return self._call("readline", size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return self._call("readlines", hint)

    def __iter__(self) -> Any:
        return iter(self.readlines())


def _limit_chunk_sizes(body: Any, max_body_bytes: int) -> None:
    """Refuse a chunk larger than a whole body may be as soon as its size line arrives."""
    reader = body.reader
    if not isinstance(reader, ChunkedReader):
        return
    parse_chunk_size = reader.parse_chunk_size

    def bounded(unreader: Any, data: bytes | None = None) -> tuple[int, bytes]:
        size, rest = parse_chunk_size(unreader, data)
        if size > max_body_bytes:
            raise _Refusal(413, f"the request body is larger than {max_body_bytes} bytes")
        return size, rest

    # The chunk parser looks the method up on the instance as it reaches each chunk.
    reader.parse_chunk_size = bounded


def describe(error: Exception, cfg: Any) -> tuple[int, str, Any]:
    """Status, message and allowed values for an error gunicorn raised while parsing."""
    detail = str(error)[:_MESSAGE_LIMIT]
    if isinstance(error, http_errors.LimitRequestLine):
        limit = cfg.limit_request_line
        return 414, f"the request line is longer than {limit} bytes", {"maximum": limit}
    if isinstance(error, http_errors.LimitRequestHeaders):
        limits = {
            "max_fields": cfg.limit_request_fields,
            "max_field_bytes": cfg.limit_request_field_size,
        }
        return 431, f"too many or too large request headers ({detail})", limits
    if isinstance(error, http_errors.UnsupportedTransferCoding):
        return 501, f"unsupported Transfer-Encoding {detail}", ["chunked"]
    if isinstance(error, http_errors.ExpectationFailed):
        return 417, f"unsupported Expect header {detail}", ["100-continue"]
    if isinstance(error, http_errors.InvalidHTTPVersion):
        return 400, f"unsupported HTTP version {detail}", ["HTTP/1.0", "HTTP/1.1"]
    if isinstance(
        error,
        http_errors.InvalidChunkSize
        | http_errors.ChunkMissingTerminator
        | http_errors.InvalidChunkExtension,
    ):
        return 400, f"malformed chunked body: {detail}", None
    if isinstance(error, http_errors.InvalidRequestLine | http_errors.InvalidRequestMethod):
        return 400, f"malformed request line: {detail}", None
    if isinstance(error, http_errors.ParseException):
        return 400, f"malformed request: {type(error).__name__} {detail}", None
    return 500, "internal error; see the server log", None


def error_response(status: int, message: str, allowed: Any = None) -> bytes:
    """A whole HTTP/1.1 answer in the app's JSON error shape; the connection closes after it."""
    body = scoring.error_body(message, allowed)
    head = (
        f"HTTP/1.1 {scoring.status_line(status)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _OneSendResponse(gunicorn_wsgi.Response):  # type: ignore[misc]
    """gunicorn's response, holding the head back until the first body bytes go out with it."""

    _head = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        lines.append("\r\n")
        self._head = "".join(lines).encode("latin-1")
        self.headers_sent = True

    def _emit_body(self, data: bytes) -> None:
        if self._head and not self.chunked:
            data, self._head = self._head + data, b""
        self._send_head()
        super()._emit_body(data)

    def _send_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            util.write(self.sock, head)

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn's sendfile writes straight to the socket once it has sent the head.
        self.send_headers()
        self._send_head()
        return bool(super().sendfile(respiter))

    def close(self) -> None:
        # An answer without body bytes (a HEAD, a redirect), or a chunked one's last chunk.
        self.send_headers()
        self._send_head()
        super().close()


class _WholeAnswer:
    """The WSGI ``start_response`` side of one whole request's answer."""

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return self.written.append

    def encode(self, body: bytes, close: bool, date: str) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status}\r\nServer: gunicorn\r\nDate: {date}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n"
        ]
        # The length is the body's own: the app's is dropped rather than trusted.
        lines.extend(
            f"{name}: {value}\r\n"
            for name, value in self.headers
            if name.lower() != "content-length"
        )
        if not self.status.startswith(_BODILESS_STATUSES):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + body


def _readable(client: socket.socket) -> bool:
    return bool(gevent_select.select([client], [], [], 0)[0])


class Worker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with the limits of ``limits`` (set by ``worker_class``)."""

    limits = ClientLimits(
        idle_seconds=5.0, header_seconds=10.0, body_seconds=30.0, max_body_bytes=2 * 1024 * 1024
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Greenlets waiting for the next request on a kept-alive connection.
        self._idle: dict[Any, socket.socket] = {}
        self._in_flight: set[Any] = set()
        self._refused: Any = None  # made in the worker process, where its samples belong
        self._whole_environ: dict[str, Any] | None = None  # None: every request goes gunicorn's way
        self._head_limits = HeadLimits(
            request_line=self.cfg.limit_request_line,
            fields=self.cfg.limit_request_fields,
            field_bytes=self.cfg.limit_request_field_size,
        )
        self._date_second = 0
        self._date = ""

    def init_process(self) -> None:
        for listener in self.sockets:
            listener.close()
        self.sockets = []
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # An access log line needs gunicorn's request and response objects, and a SCRIPT_NAME
        # from the environment gunicorn's path handling.
        if not self.log.access_log_enabled and not os.environ.get("SCRIPT_NAME"):
            environ = gunicorn_wsgi.base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "wsgi.url_scheme": "http"})
            environ.update({"SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": ""})
            self._whole_environ = environ
        gc.freeze()
        listeners = gunicorn_sock.create_sockets(self.cfg, self.log)
        for listener in listeners:
            util.close_on_exec(listener)
        # As GeventWorker.patch does with the sockets it is given.
        self.sockets = [
            gevent_socket.socket(listener.FAMILY, socket.SOCK_STREAM, fileno=listener.sock.detach())
            for listener in listeners
        ]

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_idle_connections)

    def _close_idle_connections(self) -> None:
        for request in self._in_flight:
            request.force_close()  # answered with Connection: close
        for greenlet, client in list(self._idle.items()):
            if not _readable(client):  # a request already on its way is still served
                greenlet.kill(block=False)

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        client.settimeout(self.limits.body_seconds)
        parser = http.get_parser(self.cfg, client, addr)
        listener_name = listener.getsockname()
        request = None
        served = 0
        try:
            while self._request_arrives(client, parser, served):
                request = None
                if self._whole_environ is not None:
                    kept_open = self._serve_whole(listener_name, client, addr, parser)
                    if kept_open is not None:
                        if not kept_open:
                            break
                        served += 1
                        continue
                late = _Refusal(
                    408,
                    "the request line and headers did not arrive within "
                    f"{self.limits.header_seconds:g} s",
                )
                with gevent.Timeout(self.limits.header_seconds, late):
                    request = next(parser)
                body = request.body
                _limit_chunk_sizes(body, self.limits.max_body_bytes)
                request.body = _DeadlineBody(body, self.limits.body_seconds)
                self._in_flight.add(request)
                try:
                    # Raises StopIteration when the answer closes the connection.
                    self.handle_request(listener_name, request, client, addr)
                finally:
                    self._in_flight.discard(request)
                    request.body = body
                served += 1
                if not parser.finish_body(deadline=time.monotonic() + _DRAIN_SECONDS):
                    break
        except (StopIteration, http_errors.NoMoreData, gevent.GreenletExit):
            pass
        except _Refusal as refusal:
            self.log.info("Refused request from %s: %s", addr[0], refusal.message)
            self._answer(client, refusal.status, refusal.message)
        except OSError as error:  # the client went away or stopped reading
            self.log.debug("Connection from %s ended: %s", addr[0], error)
        except Exception as error:
            self.handle_error(request, client, addr, error)
        finally:
            util.close_graceful(client, timeout=_LINGER_SECONDS)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        """gunicorn's ``AsyncWorker.handle_request`` with the answer sent in one piece and
        without the ``pre_request``/``post_request`` hooks, which this server never sets."""
        started = datetime.now() if self.log.access_log_enabled else None
        response = None
        try:
            response, environ = gunicorn_wsgi.create(
                req, sock, addr, listener_name, self.cfg, response_class=_OneSendResponse
            )
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive:
                response.force_close()
            answer = self.wsgi(environ, response.start_response)
            try:
                if isinstance(answer, environ["wsgi.file_wrapper"]):
                    response.write_file(answer)
                else:
                    for piece in answer:
                        response.write(piece)
                response.close()
            finally:
                if started is not None:
                    self.log.access(response, req, environ, datetime.now() - started)
                if hasattr(answer, "close"):
                    answer.close()
            if response.should_close():
                raise StopIteration()
        except (StopIteration, OSError):
            raise
        except gevent.GreenletExit:
            return
        except (Exception, SystemExit) as error:
            if response is not None and response.headers_sent:
                # Part of the answer may be out: a 500 now would corrupt it.
                self.log.exception("Error handling request")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
                raise StopIteration() from None
            if isinstance(error, SystemExit):
                return
            raise  # answered by handle_error

    def _serve_whole(
        self, listener_name: Any, client: socket.socket, addr: Any, parser: Any
    ) -> bool | None:
        """Answer the next request here if it is plain: whether the connection stays
        open; None when it goes gunicorn's way, its bytes given back."""
        data = parser.unreader.take_buffered() or client.recv(_READ_BYTES)
        if not data:
            return False  # the client closed between requests
        head = read_plain_head(data, self._head_limits, self.limits.max_body_bytes)
        if head is None:
            parser.unreader.unread(data)
            return None
        if len(data) < head.request_bytes:
            data = self._read_rest(client, data, head.request_bytes)
        request = head.request(data)
        if request.rest:
            parser.unreader.unread(request.rest)
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
        answer = _WholeAnswer()
        self._in_flight.add(request)
        try:
            result = self.wsgi(
                self._environ(request, client, addr, listener_name), answer.start_response
            )
            try:
                body = b"".join([*answer.written, *result])
            finally:
                if hasattr(result, "close"):
                    result.close()
        finally:
            self._in_flight.discard(request)
        close = request.close or not self.alive
        client.sendall(answer.encode(body, close, self._http_date()))
        return not close

    def _read_rest(self, client: socket.socket, data: bytes, size: int) -> bytes:
        """``data`` completed to ``size`` bytes within the body deadline of gunicorn's
        way, or cut short where the client stopped sending (the app refuses a short body)."""
        # Memory grows with the bytes that come, not with the length a client announces.
        pieces = [data]
        received = len(data)
        late = _Refusal(408, _late_body_message(self.limits.body_seconds))
        with gevent.Timeout(self.limits.body_seconds, late):
            while received < size:
                piece = client.recv(min(size - received, _READ_BYTES))
                if not piece:
                    break
                pieces.append(piece)
                received += len(piece)
        return b"".join(pieces)

    def _environ(
        self, request: WholeRequest, client: socket.socket, addr: Any, listener_name: Any
    ) -> dict[str, Any]:
        """The environ gunicorn's ``wsgi.create`` builds for the same request."""
        environ = self._whole_environ.copy()  # type: ignore[union-attr]
        head = request.head
        environ["wsgi.input"] = io.BytesIO(request.body)
        environ["gunicorn.socket"] = client
        environ["REQUEST_METHOD"] = head.method
        environ["RAW_URI"] = head.target
        environ["PATH_INFO"] = head.path
        environ["QUERY_STRING"] = head.query
        if isinstance(addr, tuple):
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
        else:
            environ["REMOTE_ADDR"] = addr.decode() if isinstance(addr, bytes) else addr
        if isinstance(listener_name, tuple):
            environ["SERVER_NAME"], environ["SERVER_PORT"] = listener_name[0], str(listener_name[1])
        else:  # a Unix socket
            environ["SERVER_NAME"], environ["SERVER_PORT"] = str(listener_name), ""
        for name, value in head.headers:
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
            else:
                key = "HTTP_" + name.replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _http_date(self) -> str:
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date = now, util.http_date(now)
        return self._date

    def _request_arrives(self, client: socket.socket, parser: Any, served: int) -> bool:
        """Wait for the first byte of a next request; False if the connection should close."""
        if parser.unreader.buf.getbuffer().nbytes:
            return True  # pipelined behind the last one
        if served and not self.alive:
            return False
        greenlet = gevent.getcurrent()
        self._idle[greenlet] = client
        try:
            gevent_socket.wait_read(client.fileno(), timeout=self.limits.idle_seconds)
        except (TimeoutError, gevent.GreenletExit):
            return False
        finally:
            del self._idle[greenlet]
        return True

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: Exception) -> None:
        status, message, allowed = describe(exc, self.cfg)
        if status == 500:
            self.log.exception("Error handling request")
        else:
            self.log.info("Refused request from %s: %s", (addr or ("",))[0], message)
        self._answer(client, status, message, allowed)

    def _answer(
        self, client: socket.socket, status: int, message: str, allowed: Any = None
    ) -> None:
        if self._refused is None:
            self._refused = refused_requests()
        self._refused.labels(str(status)).inc()
        try:
            client.sendall(error_response(status, message, allowed))
        except OSError:
            self.log.debug("Could not send the error answer: the client went away")


def worker_class(limits: ClientLimits) -> type[Worker]:
    """A ``Worker`` subclass carrying ``limits`` (gunicorn takes a worker class, not options)."""
    return type("BatcomputerWorker", (Worker,), {"limits": limits})
