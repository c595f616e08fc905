"""Operator settings from command-line flags, falling back to environment variables."""

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_SERVER_IMAGE = "ghcr.io/batcomputer/batcomputer-server:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    server_image: str = DEFAULT_SERVER_IMAGE
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    ingress_class: str | None = None
    ingress_host: str | None = None
    liveness_port: int = 8080
    # Long enough for a slow image pull and bundle download, short enough that a
    # version stuck without a container error (a server that never gets ready)
    # ends up Stalled.
    progress_deadline_seconds: int = 300
    # Safety net only: child watch events wake a model's reconcile at once.
    resync_seconds: float = 300.0
    pending_resync_seconds: float = 10.0

    @property
    def liveness_endpoint(self) -> str:
        return f"http://0.0.0.0:{self.liveness_port}/healthz"


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-operator",
        description="Serve BatModel resources as blue/green-rolled REST services.",
    )
    parser.add_argument(
        "--server-image",
        default=env.get("BATCOMPUTER_SERVER_IMAGE", DEFAULT_SERVER_IMAGE),
        help="default model server image (env BATCOMPUTER_SERVER_IMAGE)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        default=None,
        help="namespace to watch, repeatable; all namespaces when omitted "
        "(env BATCOMPUTER_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "--ingress-class",
        default=env.get("BATCOMPUTER_INGRESS_CLASS") or None,
        help="IngressClass for BatModels that name none (env BATCOMPUTER_INGRESS_CLASS)",
    )
    parser.add_argument(
        "--ingress-host",
        default=env.get("BATCOMPUTER_INGRESS_HOST") or None,
        help="Ingress host for BatModels that name none (env BATCOMPUTER_INGRESS_HOST)",
    )
    parser.add_argument(
        "--liveness-port",
        type=int,
        default=int(env.get("BATCOMPUTER_LIVENESS_PORT", "8080")),
        help="port of the /healthz liveness endpoint (env BATCOMPUTER_LIVENESS_PORT)",
    )
    parser.add_argument(
        "--progress-deadline-seconds",
        type=int,
        default=int(env.get("BATCOMPUTER_PROGRESS_DEADLINE_SECONDS", "300")),
        help="a version whose pods make no progress this long is Stalled "
        "(env BATCOMPUTER_PROGRESS_DEADLINE_SECONDS)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env.get("BATCOMPUTER_RESYNC_SECONDS", "300")),
        help="re-check every model at least this often (env BATCOMPUTER_RESYNC_SECONDS)",
    )
    return parser


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> OperatorConfig:
    args = _parser(env).parse_args(list(argv))
    namespaces = args.namespaces
    if namespaces is None:
        namespaces = [ns for ns in env.get("BATCOMPUTER_NAMESPACES", "").split(",") if ns.strip()]
    return OperatorConfig(
        server_image=args.server_image,
        namespaces=tuple(ns.strip() for ns in namespaces),
        ingress_class=args.ingress_class,
        ingress_host=args.ingress_host,
        liveness_port=args.liveness_port,
        progress_deadline_seconds=args.progress_deadline_seconds,
        resync_seconds=args.resync_seconds,
    )
