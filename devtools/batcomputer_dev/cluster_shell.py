"""Running host commands for the cluster tooling: quiet ones, and long ones with progress."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

HEARTBEAT_SECONDS = 30


class CommandError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[batcomputer] {message}", file=sys.stderr, flush=True)


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [os.fspath(arg) for arg in args],
            capture_output=True,
            text=True,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as error:
        raise CommandError(f"{args[0]} not found: run devtools/bootstrap.sh") from error
    if check and result.returncode != 0:
        raise CommandError(
            f"{' '.join(map(str, args))} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result


def run_with_progress(
    args: Sequence[str | os.PathLike[str]],
    *,
    label: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a long command with its output in a log file, echoing progress lines.

    Long steps (a Kubernetes build takes minutes) must show they are alive; the
    full output stays in the log for when something fails.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"{label}: started (log: {log_path})")
    with log_path.open("w") as log, log_path.open() as reader:
        process = subprocess.Popen(
            [os.fspath(arg) for arg in args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        last_heartbeat = started
        in_target_list = False
        while True:
            finished = process.poll() is not None
            for line in reader.readlines():
                # The Kubernetes build prints "+++ ... Building go targets" followed
                # by the target names, indented.
                in_target_list = (in_target_list and line.startswith("    ")) or "Building" in line
                if line.startswith(("+++", "!!!")) or in_target_list:
                    say(f"{label}: {line.strip()}")
            now = time.monotonic()
            if now - last_heartbeat >= HEARTBEAT_SECONDS:
                say(f"{label}: still running ({now - started:.0f} s)")
                last_heartbeat = now
            if finished:
                break
            time.sleep(1)
    if process.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise CommandError(f"{label} failed (exit {process.returncode}); log tail:\n{tail}")
    say(f"{label}: done in {time.monotonic() - started:.0f} s")
