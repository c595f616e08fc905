"""`batcomputer-cluster up|down|status|env|build`: the local Kubernetes cluster."""

from __future__ import annotations

import argparse
import json
import sys

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.cluster_shell import CommandError
from batcomputer_dev.k8s_build import binaries_dir, ensure_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="batcomputer-cluster",
        description=(
            f"Local single-node Kubernetes {cfg.K8S_VERSION} (etcd, containerd, kubelet, "
            f"kube-proxy) on bridge {cfg.BRIDGE_NAME} {cfg.BRIDGE_IP}/24. Needs root. "
            f"Pods reach Azurite at {cfg.BRIDGE_IP}:{cfg.AZURITE_PORT} when it is started there."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the cluster (builds the binaries once, ~7 min cold)")
    commands.add_parser("down", help="stop everything started and restore the host")
    commands.add_parser("status", help="components, readiness and leftovers as JSON")
    commands.add_parser("env", help="print `export KUBECONFIG=...` for eval")
    commands.add_parser("build", help="only build and cache the Kubernetes binaries")
    args = parser.parse_args(argv)

    cluster = LocalCluster()
    try:
        if args.command == "up":
            cluster.up()
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            status = cluster.status()
            status["leftovers"] = [] if all(status["components"].values()) else cluster.leftovers()
            print(json.dumps(status, indent=2))
            return 0 if status["node_ready"] else 3
        elif args.command == "env":
            print(f"export KUBECONFIG={cluster.paths.kubeconfig}")
            print(f"# kubectl {cfg.K8S_VERSION}: {binaries_dir() / 'kubectl'}")
        else:
            print(ensure_binaries())
    except CommandError as error:
        print(f"batcomputer-cluster {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
