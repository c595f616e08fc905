#!/usr/bin/env bash
# train -> publish -> bump: the CI half of the Batcomputer release flow.
#
#   train-publish-bump.sh MODEL VERSION MANIFEST
#
# 1. trains MODEL (crime, titanic or a .toml configuration) as VERSION,
# 2. publishes the bundle under BATCOMPUTER_CONTAINER_URI/<model>/<VERSION>
#    (batcomputer-publish refuses a non-major bump that changes the feature schema),
# 3. rewrites spec.version, spec.source.uri and the bundle digest in MANIFEST
#    (a BatModel in the GitOps repository) and, with COMMIT=1, commits it.
# Argo CD or Flux then syncs the BatModel; the operator rolls the new version out
# blue/green and reports Ready (or Stalled, with the old version still serving).
#
# Environment:
#   BATCOMPUTER_CONTAINER_URI   required, e.g. https://acct.blob.core.windows.net/models
#   AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_SAS_TOKEN   write access for publishing
#   BATCOMPUTER_BIN             folder of the batcomputer-* commands (default: from PATH)
#   PYTHON                      interpreter with PyYAML for the bump (default: python3)
#   COMMIT=1                    git commit the bumped manifest
set -euo pipefail

if [[ $# -ne 3 ]]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
model=$1 version=$2 manifest=$3
: "${BATCOMPUTER_CONTAINER_URI:?set BATCOMPUTER_CONTAINER_URI to the blob container, e.g. https://acct.blob.core.windows.net/models}"
[[ -f $manifest ]] || { echo "train-publish-bump: no manifest at $manifest" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
bin=${BATCOMPUTER_BIN:+$BATCOMPUTER_BIN/}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "==> training $model $version"
"${bin}batcomputer-train" "$model" --version "$version" --out "$work/bundles"

model_name=$(basename "$model" .toml)
echo "==> publishing to $BATCOMPUTER_CONTAINER_URI/$model_name/$version"
"${bin}batcomputer-publish" "$work/bundles/$model_name/$version" \
  --to "$BATCOMPUTER_CONTAINER_URI" > "$work/published.yaml"

echo "==> bumping $manifest"
"${PYTHON:-python3}" "$here/bump-batmodel.py" "$manifest" "$work/published.yaml"
git --no-pager diff -- "$manifest" 2>/dev/null || true

if [[ ${COMMIT:-0} == 1 ]]; then
  git add -- "$manifest"
  git commit -m "$model_name $version: trained, published, BatModel bumped" -- "$manifest"
fi
echo "==> $manifest now serves $model_name $version once GitOps syncs it"
