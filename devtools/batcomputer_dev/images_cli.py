"""`batcomputer-images build [server|operator|all]`: offline builds, imported into the cluster."""

from __future__ import annotations

import argparse
import sys
import time

from batcomputer_dev import images
from batcomputer_dev.cluster import LocalCluster
from batcomputer_dev.cluster_shell import CommandError, say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="batcomputer-images",
        description=(
            "Build the images with buildah from a cached debootstrap base and a cached "
            "host wheelhouse (no registry, no network inside the build), then import them "
            "into the local cluster's containerd when it is up."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build (and import) images")
    build.add_argument("which", nargs="?", default="all", choices=[*images.IMAGES, "all"])
    build.add_argument("--no-import", action="store_true", help="only build")
    args = parser.parse_args(argv)

    kinds = list(images.IMAGES) if args.which == "all" else [args.which]
    started = time.monotonic()
    try:
        names = images.build_images(kinds)
        say(f"built {', '.join(names)} in {time.monotonic() - started:.0f} s")
        cluster = LocalCluster()
        if args.no_import:
            return 0
        if not cluster.healthy():
            say("local cluster not up: images stay in buildah until the next build with it up")
            return 0
        for name in names:
            images.import_into_cluster(name, cluster.paths)
    except CommandError as error:
        print(f"batcomputer-images: {error}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
