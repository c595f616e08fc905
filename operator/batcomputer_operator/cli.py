"""`batcomputer-operator`: run the BatModel operator against the current cluster."""

import os
import sys

import kopf

from batcomputer_operator import handlers
from batcomputer_operator.config import load_config


def main(argv: list[str] | None = None) -> int:
    config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    kopf.configure()
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint,
        memo=handlers.initial_memo(config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
