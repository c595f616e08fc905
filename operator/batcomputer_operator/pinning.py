"""Whether a BatModel pins its bundle, and whether the operator may serve it unpinned.

Only the bundle digest (spec.source.digest) pins a whole bundle: bundle.json lists every
other file with its sha256, so the sha256 of bundle.json covers them all. Per-file pins
(spec.source.sha256) cover the three pickles but neither model.onnx nor bundle.json,
whose self-check values decide whether model.onnx is served: whoever can write the
blobs still decides what such a model answers.
"""

from dataclasses import dataclass

from batcomputer_operator.spec import BatModelSpec

CONDITION = "Pinned"
BY_DIGEST = "BundleDigest"
UNPINNED = "Unpinned"
_ASK = "set spec.source.digest to the bundle digest batcomputer-publish prints"


@dataclass(frozen=True)
class Pinning:
    """The Pinned condition's status, reason and message for a spec."""

    pinned: bool
    reason: str
    message: str


def pinning(spec: BatModelSpec) -> Pinning:
    if spec.digest is not None:
        return Pinning(
            True,
            BY_DIGEST,
            f"version {spec.version} is pinned by its bundle digest {spec.digest}: "
            "bundle.json and every file it lists are verified before the server starts",
        )
    if spec.sha256:
        files = ", ".join(name for name, _ in spec.sha256)
        return Pinning(
            False,
            UNPINNED,
            f"version {spec.version} pins only {files} (spec.source.sha256); bundle.json "
            f"and model.onnx are whatever the storage holds: {_ASK}",
        )
    return Pinning(
        False,
        UNPINNED,
        f"version {spec.version} is not pinned: whoever can write its blobs decides what "
        f"it serves; {_ASK}",
    )


def refusal(pin: Pinning, require_pinned: bool) -> str | None:
    """Why the operator will not serve the spec, or None when it may."""
    if pin.pinned or not require_pinned:
        return None
    return f"this operator serves only pinned bundles (requirePinnedBundles): {pin.message}"
