#!/usr/bin/env python3
"""Point a BatModel manifest in Git at a newly published bundle, keeping everything else.

    bump-batmodel.py MANIFEST PUBLISHED

PUBLISHED is the BatModel that `batcomputer-publish` printed for the new bundle.
spec.version, spec.source.uri and spec.source.digest (the bundle digest, which pins
every file of the bundle) of MANIFEST take its values; comments, replicas,
resources, credentials and ingress stay as they are, so the Git diff a reviewer
sees is exactly the version bump. Needs PyYAML.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class BumpError(ValueError):
    pass


def _load(text: str, what: str) -> dict:
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BumpError(f"{what} is not valid YAML: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("kind") != "BatModel":
        raise BumpError(f"{what} is not a BatModel manifest (kind: BatModel)")
    return manifest


def _replace_value(text: str, key: str, value: str, what: str) -> str:
    pattern = re.compile(rf"^(?P<lead>\s+{re.escape(key)}:[ \t]*)\S.*?(?P<tail>[ \t]+#.*)?$", re.M)
    found = pattern.findall(text)
    if len(found) != 1:
        raise BumpError(f"{what}: expected exactly one '{key}:' line, found {len(found)}")
    return pattern.sub(lambda m: f"{m['lead']}{value}{m['tail'] or ''}", text)


def bump(manifest_text: str, published_text: str, what: str = "manifest") -> str:
    """The manifest text with version, URI and digests taken from the published BatModel."""
    current = _load(manifest_text, what)
    published = _load(published_text, "published manifest")
    if current["metadata"]["name"] != published["metadata"]["name"]:
        raise BumpError(
            f"{what} is BatModel {current['metadata']['name']!r} but the published bundle is "
            f"{published['metadata']['name']!r}"
        )
    spec = published["spec"]
    digest = spec["source"].get("digest")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise BumpError("published manifest has no bundle digest (spec.source.digest)")
    if "sha256" in current["spec"]["source"]:
        raise BumpError(
            f"{what} pins files by spec.source.sha256, which the new bundle would not match; "
            "replace them by a spec.source.digest line once, by hand"
        )
    text = _replace_value(manifest_text, "version", f'"{spec["version"]}"', what)
    text = _replace_value(text, "uri", spec["source"]["uri"], what)
    text = _replace_value(text, "digest", digest, what)
    bumped = _load(text, what)["spec"]
    if (bumped["version"], bumped["source"]["uri"], bumped["source"]["digest"]) != (
        spec["version"],
        spec["source"]["uri"],
        digest,
    ):
        raise BumpError(f"{what}: the edit did not land where expected; edit it by hand")
    return text


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    manifest, published = Path(argv[0]), Path(argv[1])
    try:
        manifest.write_text(bump(manifest.read_text(), published.read_text(), str(manifest)))
    except (BumpError, OSError, KeyError) as error:
        print(f"bump-batmodel: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
