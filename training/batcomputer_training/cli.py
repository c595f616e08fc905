"""``batcomputer-train``: train a model from its configuration and write its bundle.

    batcomputer-train titanic --version 1.0.0 --out bundles
    batcomputer-train crime --version 1.1.0 --out bundles --estimator LogisticRegression
    batcomputer-train path/to/model.toml --version 2.0.0 --out bundles --param max_depth=6

Exit codes: 0 bundle written; 1 training failed (data, estimator); 2 usage or
configuration error; 3 the version already exists in the output folder.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import semver

from batcomputer_training import config as config_module
from batcomputer_training import datasets, pipeline


class UsageError(Exception):
    pass


def parse_version(text: str) -> str:
    """A SemVer 2.0.0 version as given (``1.0.0``, ``2.1.0-rc.1+build.5``), else UsageError."""
    try:
        semver.Version.parse(text)
    except (ValueError, TypeError):
        raise UsageError(
            f"--version {text!r} is not a semantic version MAJOR.MINOR.PATCH (e.g. 1.0.0); "
            "MAJOR when inputs or flags change, MINOR for another estimator or parameters, "
            "PATCH for new data"
        ) from None
    return text


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as a TOML literal (``8``, ``0.5``, ``true``, ``"gini"``),
    ``None``/``null`` as None, anything else as a plain string."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key.isidentifier():
        raise UsageError(f"--param {text!r} must look like name=value, e.g. max_depth=6")
    if value in ("None", "none", "null"):
        return key, None
    if value in ("True", "False"):
        return key, value == "True"
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batcomputer-train",
        description="Train a model from its configuration and write its bundle "
        "to OUT/<model>/<version>/.",
    )
    parser.add_argument(
        "model",
        help=f"a shipped model ({', '.join(config_module.shipped_models())}) "
        "or the path of a .toml configuration",
    )
    parser.add_argument("--version", required=True, help="SemVer of the bundle, e.g. 1.0.0")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--estimator",
        help="scikit-learn classifier to use instead of the configured one "
        "(e.g. LogisticRegression); a MINOR version change",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="estimator parameter (repeatable), e.g. --param max_depth=6",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    parser.add_argument("--quiet", action="store_true", help="print only the bundle folder")
    return parser


def run(argv: Sequence[str] | None = None) -> Path:
    """Parse, train and write; raise on any failure (tests call this)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    version = parse_version(args.version)
    params = dict(parse_param(p) for p in args.param)
    try:
        config = config_module.load(args.model)
    except config_module.ConfigError as error:
        raise UsageError(str(error)) from None
    try:
        pipeline.make_estimator(config, args.estimator, params)
    except pipeline.TrainingError as error:
        raise UsageError(str(error)) from None
    pipeline.bundle_folder(args.out, config.name, version, args.force)  # fail before training

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{config.name}] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    raw = datasets.read_source(config.data)
    trained = pipeline.train(config, raw, estimator=args.estimator, params=params, log=log)
    folder = pipeline.write_bundle(trained, version, args.out, force=args.force)
    log(f"bundle written in {time.perf_counter() - started:.1f} s: {folder}")
    if not args.quiet:
        metrics = " ".join(f"{k}={v}" for k, v in trained.metrics.items())
        log(f"held-out metrics: {metrics}")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    try:
        folder = run(argv)
    except UsageError as error:
        print(f"batcomputer-train: error: {error}", file=sys.stderr)
        return 2
    except pipeline.BundleExistsError as error:
        print(f"batcomputer-train: error: {error}", file=sys.stderr)
        return 3
    except (pipeline.TrainingError, datasets.DatasetError) as error:
        print(f"batcomputer-train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
