"""`batcomputer-demo`: train, publish, install and call both models on a cluster."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from batcomputer_dev import cluster_config
from batcomputer_dev.demo import DemoError, DemoSettings, run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batcomputer-demo", description=__doc__)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=cluster_config.cache_root() / "demo",
        help="where bundles, manifests and Azurite data go (default: %(default)s)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(
            os.environ.get("KUBECONFIG")
            or cluster_config.ClusterPaths.from_environment().kubeconfig
        ),
        help="cluster to use (default: $KUBECONFIG, else the local cluster's)",
    )
    parser.add_argument(
        "--blob-host",
        default=cluster_config.BRIDGE_IP,
        help="address where both this machine and the pods reach Azurite (default: %(default)s)",
    )
    parser.add_argument("--blob-port", type=int, default=cluster_config.AZURITE_PORT)
    parser.add_argument("--namespace", default="models", help="for the BatModels [%(default)s]")
    parser.add_argument(
        "--operator-namespace",
        default="batcomputer-system",
        help="for the Helm release of the operator [%(default)s]",
    )
    parser.add_argument("--release", default="batcomputer", help="Helm release name [%(default)s]")
    parser.add_argument(
        "--helm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra chart value, e.g. image.repository=REGISTRY/batcomputer-operator (repeatable)",
    )
    args = parser.parse_args(argv)
    settings = DemoSettings(
        work_dir=args.work_dir,
        kubeconfig=args.kubeconfig,
        blob_host=args.blob_host,
        blob_port=args.blob_port,
        models_namespace=args.namespace,
        operator_namespace=args.operator_namespace,
        release=args.release,
        helm_values=tuple(args.helm_set),
    )
    try:
        run_demo(settings)
    except DemoError as error:
        print(f"\ndemo failed: {error}", file=sys.stderr)
        return 1
    return 0
