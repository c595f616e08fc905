"""Operator settings from command-line flags, falling back to environment variables."""

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_SERVER_IMAGE = "ghcr.io/batcomputer/batcomputer-server:0.1.0"
# [registry[:port]/]path[:tag][@sha256:<64 hex>], as the container runtimes parse it.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
IMAGE_REFERENCE_PATTERN = (
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]+)?/)?"  # registry
    rf"{_COMPONENT}(?:/{_COMPONENT})*"  # repository path
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"  # tag, digest
)
_IMAGE_REFERENCE = re.compile(IMAGE_REFERENCE_PATTERN)
# A whole number of KiB, MiB, ... EiB, as a Kubernetes quantity spells it (1Gi, 512Mi).
BINARY_QUANTITY_PATTERN = r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi|Ei)$"
_BINARY_QUANTITY = re.compile(BINARY_QUANTITY_PATTERN)
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
DEFAULT_BUNDLE_SIZE_LIMIT = "1Gi"


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
    # Refuse (Stalled, reason Unpinned) BatModels without spec.source.digest.
    require_pinned_bundles: bool = False
    # Safety net only: watch events wake a model's reconcile at once, and a resync
    # reads the cache, not the API server.
    resync_seconds: float = 600.0
    metrics_port: int = 8383  # 0: no metrics endpoint
    # One active replica at a time, by a coordination.k8s.io Lease in this namespace;
    # None: no leader election (a single replica).
    leader_election_namespace: str | None = None
    leader_election_id: str = "batcomputer-operator"
    # The most a model's bundle may hold, in bytes: the fetcher refuses a larger one and the
    # kubelet evicts a pod whose bundle volume outgrows it, so a bundle cannot fill a node.
    bundle_size_limit: int = 1 << 30

    @property
    def liveness_endpoint(self) -> str:
        return f"http://0.0.0.0:{self.liveness_port}/healthz"


def image_reference(value: str) -> str:
    """An image reference a container runtime accepts; a typo fails here, at start-up, and
    not as every model's ImagePullBackOff."""
    if not _IMAGE_REFERENCE.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r:.120} is not an image reference REPOSITORY[:TAG][@sha256:<64 hex>]"
        )
    return value


def binary_quantity(value: str) -> int:
    """Bytes of a quantity such as ``1Gi`` or ``512Mi``; anything else is refused."""
    text = value.strip()
    if not _BINARY_QUANTITY.match(text):
        raise argparse.ArgumentTypeError(
            f"{value!r:.40} is not a size in Ki, Mi, Gi, Ti, Pi or Ei (such as 1Gi or 512Mi)"
        )
    suffix = _BINARY_SUFFIXES.index(text[-2:]) + 1
    return int(text[:-2]) * 1024**suffix


def format_binary_quantity(size: int) -> str:
    """``size`` bytes (a whole number of KiB) as Kubernetes writes it back: in the largest
    unit that divides it, so a manifest matches what the API server stores."""
    number, unit = size, ""
    for suffix in _BINARY_SUFFIXES:
        if number % 1024:
            break
        number, unit = number // 1024, suffix
    return f"{number}{unit}"


def _flag(value: str) -> bool:
    """An environment switch: true/false, yes/no, 1/0 or empty (false); anything else is
    refused rather than read as one or the other."""
    normalized = value.strip().lower()
    if normalized in ("true", "yes", "1"):
        return True
    if normalized in ("false", "no", "0", ""):
        return False
    raise ValueError(
        f"BATCOMPUTER_REQUIRE_PINNED_BUNDLES: {value!r:.40} is not a boolean (true or false)"
    )


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-operator",
        description="Serve BatModel resources as blue/green-rolled REST services.",
    )
    parser.add_argument(
        "--server-image",
        type=image_reference,
        default=env.get("BATCOMPUTER_SERVER_IMAGE", DEFAULT_SERVER_IMAGE),
        help="default model server image, pinned by digest with REPOSITORY@sha256:<64 hex> "
        "(env BATCOMPUTER_SERVER_IMAGE)",
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
        "--require-pinned-bundles",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refuse BatModels whose bundle is not pinned by spec.source.digest "
        "(env BATCOMPUTER_REQUIRE_PINNED_BUNDLES=true)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env.get("BATCOMPUTER_RESYNC_SECONDS", "600")),
        help="re-check every model from the cache at least this often, jittered "
        "(env BATCOMPUTER_RESYNC_SECONDS)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env.get("BATCOMPUTER_METRICS_PORT", "8383")),
        help="port of the Prometheus /metrics endpoint, 0 for none (env BATCOMPUTER_METRICS_PORT)",
    )
    parser.add_argument(
        "--bundle-size-limit",
        type=binary_quantity,
        default=env.get("BATCOMPUTER_BUNDLE_SIZE_LIMIT") or DEFAULT_BUNDLE_SIZE_LIMIT,
        metavar="QUANTITY",
        help="most a model's bundle may hold, such as 1Gi or 512Mi: the size limit of its "
        "pods' bundle volume and the fetcher's --max-bytes (env BATCOMPUTER_BUNDLE_SIZE_LIMIT, "
        f"default {DEFAULT_BUNDLE_SIZE_LIMIT})",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=env.get("BATCOMPUTER_LEADER_ELECTION_NAMESPACE") or None,
        help="run as one of several replicas, active only while holding a Lease in this "
        "namespace (env BATCOMPUTER_LEADER_ELECTION_NAMESPACE)",
    )
    parser.add_argument(
        "--leader-election-id",
        default=env.get("BATCOMPUTER_LEADER_ELECTION_ID", "batcomputer-operator"),
        help="name of that Lease (env BATCOMPUTER_LEADER_ELECTION_ID)",
    )
    return parser


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> OperatorConfig:
    parser = _parser(env)
    args = parser.parse_args(list(argv))
    if args.require_pinned_bundles is None:
        try:
            args.require_pinned_bundles = _flag(env.get("BATCOMPUTER_REQUIRE_PINNED_BUNDLES", ""))
        except ValueError as error:
            parser.error(str(error))
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
        require_pinned_bundles=args.require_pinned_bundles,
        resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        bundle_size_limit=args.bundle_size_limit,
    )
