"""Names shared by every part of Batcomputer: bundle file names and fetcher exit codes.

Dependency-free on purpose: the operator imports it and carries no NumPy.
"""

from __future__ import annotations

FORMAT = "batcomputer-bundle/1"
MANIFEST_FILE = "bundle.json"
MODEL_FILE = "model.pkl"
LOOKUP_FILE = "lookup.pkl"
FLAGS_FILE = "flags.pkl"
ONNX_FILE = "model.onnx"
PICKLE_FILES = (MODEL_FILE, LOOKUP_FILE, FLAGS_FILE)
# Every file bundle.json may list; it lists each one present, with its sha256.
BUNDLE_FILES = (*PICKLE_FILES, ONNX_FILE)

# The bundle digest: the sha256 of bundle.json's exact bytes, as a BatModel's
# spec.source.digest and batcomputer-fetch --digest carry it. It pins every file,
# because bundle.json pins every other file.
DIGEST_PREFIX = "sha256:"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"

# Keys of a blob credentials Secret, which is mounted read-only into the fetch container
# as files of these names (batcomputer-fetch --credentials-dir); set one of them.
CONNECTION_STRING_FILE = "connectionString"
SAS_TOKEN_FILE = "sasToken"

# batcomputer-fetch exit codes; the operator turns the non-zero ones into Stalled reasons.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_DIGEST = 5
EXIT_UNREACHABLE = 6
EXIT_INVALID_BUNDLE = 7

FETCH_FAILURE_REASONS = {
    EXIT_NOT_FOUND: "BlobNotFound",
    EXIT_AUTH: "AuthenticationFailed",
    EXIT_DIGEST: "DigestMismatch",
    EXIT_UNREACHABLE: "StorageUnreachable",
    EXIT_INVALID_BUNDLE: "InvalidBundle",
}
