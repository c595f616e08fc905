"""``batcomputer-azurite start|stop|status``: a local Azurite blob service for dev and demos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batcomputer_dev.azurite import (
    AzuriteError,
    default_location,
    recorded,
    start_azurite,
    stop_azurite,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-azurite",
        description="Run Azurite (blob service, telemetry disabled) and print how to reach it.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (start)")
    parser.add_argument("--port", type=int, default=10000, help="port to listen on (start)")
    parser.add_argument(
        "--location",
        type=Path,
        default=default_location(),
        help="data folder; also where the running instance is recorded (default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    running = recorded(arguments.location)
    try:
        if arguments.action == "start":
            if running is None:
                running = start_azurite(arguments.host, arguments.port, arguments.location)
                print(f"Azurite started (pid {running.pid})", file=sys.stderr)
            else:
                print(f"Azurite already running (pid {running.pid})", file=sys.stderr)
        elif arguments.action == "stop":
            if running is not None:
                stop_azurite(running)
                print(f"Azurite stopped (pid {running.pid})", file=sys.stderr)
            else:
                print(f"no Azurite recorded in {arguments.location}", file=sys.stderr)
            return 0
    except AzuriteError as error:
        print(f"batcomputer-azurite: {error}", file=sys.stderr)
        return 1
    if running is None:
        print(f"Azurite is not running (location {arguments.location})", file=sys.stderr)
        return 3
    print(f"export AZURE_STORAGE_CONNECTION_STRING='{running.connection_string}'")
    print(f"# blob endpoint: {running.blob_endpoint}  pid: {running.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
