"""``batcomputer-server``: the model server, gunicorn running in-process.

The workers are ``worker.Worker`` (gevent): a slow, idle or hostile client costs a socket
and a greenlet, never a worker, within the time limits set here. Each worker loads and
verifies the bundle after the fork (onnxruntime sessions do not survive a fork). A bundle
that fails to load leaves the server up but unready: /healthz answers, /readyz says 503
and why, and the log has one clear line. Nothing is written outside ``$TMPDIR`` (the
pod's root filesystem is read-only).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import socket
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
_DEFAULT_MAX_BATCH_ROWS = 5000
_DEFAULT_MAX_CONNECTIONS = 4096
# Room for the listening socket, log files, the bundle and the metrics files.
_SPARE_FILES = 256
_SHM = Path("/dev/shm")

_log = logging.getLogger("batcomputer_server")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, got {text}")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 100, got {text}")
    return value


def _http_url(text: str) -> str:
    target = urllib.parse.urlsplit(text)
    if target.scheme != "http" or not target.hostname or target.query or target.fragment:
        raise argparse.ArgumentTypeError(f"not an http:// URL with a host: {text!r:.100}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-server",
        description="Serve a Batcomputer model bundle over HTTP (gunicorn + Flask).",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle folder")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on [0.0.0.0]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    parser.add_argument("--workers", type=_positive, default=2, help="worker processes [2]")
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=_DEFAULT_MAX_CONNECTIONS,
        help=f"open connections per worker, idle ones included [{_DEFAULT_MAX_CONNECTIONS}]",
    )
    parser.add_argument(
        "--keepalive",
        type=_seconds,
        default=5.0,
        help="seconds a connection may wait for its (next) request; then it is closed [5]",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        help="seconds for a request line and headers once begun; later is a 408 [10]",
    )
    parser.add_argument(
        "--body-timeout",
        type=_seconds,
        default=30.0,
        help="seconds for a request body after its headers (and for each write); "
        "later is a 408 [30]",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=_DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body; larger gets 413 [{_DEFAULT_MAX_BODY_BYTES}]",
    )
    parser.add_argument(
        "--max-batch-rows",
        type=_positive,
        default=_DEFAULT_MAX_BATCH_ROWS,
        help=f"most rows in one batch; more gets 413 [{_DEFAULT_MAX_BATCH_ROWS}]",
    )
    parser.add_argument(
        "--root-path",
        default=os.environ.get("BATCOMPUTER_ROOT_PATH", ""),
        help="path prefix the server is also reached under, e.g. /models/crime "
        "[$BATCOMPUTER_ROOT_PATH]",
    )
    parser.add_argument(
        "--shadow-url",
        type=_http_url,
        default=os.environ.get("BATCOMPUTER_SHADOW_URL") or None,
        help="copy answered predictions to this other version's server and compare the "
        "answers, e.g. http://crime-v2-0-0.models.svc [$BATCOMPUTER_SHADOW_URL]",
    )
    parser.add_argument(
        "--shadow-percent",
        type=_percent,
        default=os.environ.get("BATCOMPUTER_SHADOW_PERCENT") or "100",
        help="percent of answered predictions copied to --shadow-url "
        "[$BATCOMPUTER_SHADOW_PERCENT or 100]",
    )
    parser.add_argument(
        "--shadow-config",
        type=Path,
        default=os.environ.get("BATCOMPUTER_SHADOW_CONFIG") or None,
        help='instead of --shadow-url: a JSON file {"url": ..., "percent": ...} (or {} '
        "for none) looked at every 5 s, so shadowing starts and stops without a restart "
        "[$BATCOMPUTER_SHADOW_CONFIG]",
    )
    parser.add_argument(
        "--shadow-timeout",
        type=_seconds,
        default=2.0,
        help="seconds the shadow has to answer a copy; later counts as its error [2]",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level [info]",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log each request line (never bodies)"
    )
    return parser


def _port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None.

    Workers open their own listening sockets (``reuse_port``), so a port already in use
    would only make them fail and be restarted forever: refuse it before starting.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return str(error)
    return None


def _prepare_metrics_dir() -> str:
    """Prometheus multiprocess directory: $PROMETHEUS_MULTIPROC_DIR or a fresh one in $TMPDIR."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        # Samples of an earlier run would be added to this one's.
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="batcomputer-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return str(directory)


def build_app(options: argparse.Namespace) -> Any:
    """Load the bundle and build the WSGI app; an unready app when the bundle is bad."""
    from batcomputer_bundle import bundle
    from batcomputer_server import shadow
    from batcomputer_server.app import create_app
    from batcomputer_server.metrics import Metrics
    from batcomputer_server.predictor import Predictor

    settings = {
        "max_body_bytes": options.max_body_bytes,
        "max_batch_rows": options.max_batch_rows,
        "root_path": options.root_path,
    }
    try:
        predictor = Predictor.load(options.bundle)
    except Exception as error:
        _log.error("bundle %s is NOT READY (serving 503 on /readyz): %s", options.bundle, error)
        try:
            manifest = bundle.read_manifest(options.bundle)
        except bundle.BundleError:
            manifest = None
        return create_app(None, load_error=str(error), manifest=manifest, **settings)
    _log.info(
        "serving %s %s with %s: %s",
        predictor.name,
        predictor.version,
        predictor.engine.name,
        predictor.engine_reason,
    )
    metrics = Metrics()
    mirror: shadow.Shadow | shadow.ShadowFile | None
    if options.shadow_config is not None:
        mirror = shadow.ShadowFile(options.shadow_config, metrics, options.shadow_timeout)
    else:
        mirror = shadow.from_settings(
            options.shadow_url, options.shadow_percent, metrics, options.shadow_timeout
        )
        if mirror is not None:
            _log.info(
                "copying %g %% of predictions to %s", options.shadow_percent, options.shadow_url
            )
    return create_app(
        predictor, metrics=metrics, mirror=mirror.offer if mirror else None, **settings
    )


def _gunicorn_options(options: argparse.Namespace) -> dict[str, Any]:
    from batcomputer_server.metrics import mark_worker_dead
    from batcomputer_server.worker import ClientLimits, worker_class

    def child_exit(_server: Any, worker: Any) -> None:
        mark_worker_dead(worker.pid)

    limits = ClientLimits(
        idle_seconds=options.keepalive,
        header_seconds=options.header_timeout,
        body_seconds=options.body_timeout,
        max_body_bytes=options.max_body_bytes,
    )
    settings: dict[str, Any] = {
        "bind": f"{options.host}:{options.port}",
        "workers": options.workers,
        "worker_class": worker_class(limits),
        "worker_connections": options.max_connections,
        "limit_request_line": 4094,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        # The parser whose errors worker.describe knows, whether or not gunicorn's
        # optional C parser happens to be installed.
        "http_parser": "python",
        "preload_app": False,
        # Each worker listens on a socket of its own and the kernel spreads new connections
        # over them; on one shared socket the first worker to wake took a burst of
        # keep-alive connections alone (often all 8 of wrk's), halving throughput.
        "reuse_port": True,
        # Whole seconds for gunicorn, which only needs to know keep-alive is on; the
        # worker enforces the exact idle limit.
        "keepalive": math.ceil(options.keepalive),
        "timeout": 60,
        "graceful_timeout": 10,
        "loglevel": options.log_level,
        "errorlog": "-",
        "accesslog": "-" if options.access_log else None,
        "proc_name": "batcomputer-server",
        "control_socket_disable": True,
        "child_exit": child_exit,
    }
    if _SHM.is_dir() and os.access(_SHM, os.W_OK):
        settings["worker_tmp_dir"] = str(_SHM)
    return settings


def _raise_open_file_limit(wanted: int) -> None:
    """Every connection is a file descriptor: lift the soft limit as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        _log.warning(
            "only %d open files allowed: fewer than %d connections per worker", hard, wanted
        )


def main(
    argv: Sequence[str] | None = None,
    load_app: Callable[[argparse.Namespace], Any] = build_app,
) -> int:
    """Serve with gunicorn; each worker builds its app with ``load_app`` after the fork."""
    parser = _parser()
    options = parser.parse_args(argv)
    if options.shadow_config is not None and options.shadow_url is not None:
        parser.error("give --shadow-url or --shadow-config, not both")
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    problem = _port_taken(options.host, options.port)
    if problem is not None:
        _log.error("cannot listen on %s:%s: %s", options.host, options.port, problem)
        return 1
    _raise_open_file_limit(options.max_connections + _SPARE_FILES)
    # Before anything imports prometheus_client: it picks multiprocess storage at import.
    _prepare_metrics_dir()
    # onnxruntime writes a device id under $XDG_CACHE_HOME (else ~/.cache) when imported;
    # keep it in $TMPDIR, the one writable place in a pod.
    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="batcomputer-cache-"))

    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in _gunicorn_options(options).items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load_app(options)

    _Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
