"""examples/pipeline/bump-batmodel.py: the GitOps diff of a release is exactly the version bump."""

import difflib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "batmodel-titanic.yaml"
_SPEC = importlib.util.spec_from_file_location(
    "bump_batmodel", REPO / "examples" / "pipeline" / "bump-batmodel.py"
)
bump_batmodel = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bump_batmodel)

# What `batcomputer-publish` prints for a new titanic release.
PUBLISHED = """\
apiVersion: batcomputer.io/v1alpha1
kind: BatModel
metadata:
  name: titanic
spec:
  version: 1.1.0
  source:
    uri: https://acct.blob.core.windows.net/models/titanic/1.1.0
    digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
"""


def test_bump_changes_only_version_uri_and_bundle_digest():
    before = EXAMPLE.read_text()
    after = bump_batmodel.bump(before, PUBLISHED)
    changed = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line.startswith("+") and not line.startswith("+++")
    ]
    assert changed == [
        '+  version: "1.1.0"',
        "+    uri: https://acct.blob.core.windows.net/models/titanic/1.1.0",
        "+    digest: sha256:" + "1" * 64,
    ]
    assert "# The Titanic survival model" in after
    assert "credentialsSecret: blob-reader" in after
    assert "replicas: 2" in after


def test_bump_refuses_another_models_bundle():
    with pytest.raises(bump_batmodel.BumpError, match=r"'titanic'.*'crime'"):
        bump_batmodel.bump(EXAMPLE.read_text(), PUBLISHED.replace("titanic", "crime"))


@pytest.mark.parametrize("digest", [None, "1" * 64, "sha256:" + "A" * 64])
def test_bump_refuses_a_publication_without_a_bundle_digest(digest):
    published = PUBLISHED.replace("sha256:" + "1" * 64, digest or "")
    if digest is None:
        published = "\n".join(line for line in PUBLISHED.splitlines() if "digest" not in line)
    with pytest.raises(bump_batmodel.BumpError, match=r"no bundle digest \(spec\.source\.digest\)"):
        bump_batmodel.bump(EXAMPLE.read_text(), published)


def test_bump_refuses_a_manifest_without_a_digest_line():
    unpinned = "\n".join(line for line in EXAMPLE.read_text().splitlines() if "digest:" not in line)
    with pytest.raises(bump_batmodel.BumpError, match=r"expected exactly one 'digest:' line"):
        bump_batmodel.bump(unpinned, PUBLISHED)


def test_bump_refuses_a_manifest_whose_file_pins_the_new_bundle_would_break():
    pinned_files = EXAMPLE.read_text().replace(
        "    digest:", "    sha256:\n      model.pkl: " + "0" * 64 + "\n    digest:"
    )
    with pytest.raises(bump_batmodel.BumpError, match=r"pins files by spec\.source\.sha256"):
        bump_batmodel.bump(pinned_files, PUBLISHED)


def test_command_line_reports_errors_without_touching_the_manifest(tmp_path, capsys):
    manifest = tmp_path / "batmodel.yaml"
    manifest.write_text(EXAMPLE.read_text())
    published = tmp_path / "published.yaml"
    published.write_text("kind: ConfigMap\n")
    assert bump_batmodel.main([str(manifest), str(published)]) == 1
    assert "published manifest is not a BatModel manifest" in capsys.readouterr().err
    assert manifest.read_text() == EXAMPLE.read_text()
