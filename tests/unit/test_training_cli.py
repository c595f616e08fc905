"""batcomputer-train: arguments, clear errors and exit codes."""

import pytest

from batcomputer_training import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "latest", ""])
def test_a_version_that_is_not_semver_is_refused(capsys, tmp_path, version):
    code, _, err = run(capsys, "titanic", "--version", version, "--out", str(tmp_path))
    assert code == 2
    assert "is not a semantic version MAJOR.MINOR.PATCH" in err
    assert not list(tmp_path.iterdir())


def test_prerelease_and_build_versions_are_semver():
    assert cli.parse_version("2.1.0-rc.1+build.5") == "2.1.0-rc.1+build.5"


def test_an_unknown_model_names_the_choices(capsys, tmp_path):
    code, _, err = run(capsys, "dogs", "--version", "1.0.0", "--out", str(tmp_path))
    assert code == 2
    assert "unknown model 'dogs': use one of crime, titanic" in err


def test_a_missing_config_file(capsys, tmp_path):
    code, _, err = run(capsys, "nope/model.toml", "--version", "1.0.0", "--out", str(tmp_path))
    assert code == 2
    assert "configuration file not found: nope/model.toml" in err


def test_an_unknown_estimator_fails_before_any_data_is_read(capsys, tmp_path, monkeypatch):
    from batcomputer_training import datasets

    monkeypatch.setattr(datasets, "read_source", lambda source: pytest.fail("data was read"))
    code, _, err = run(
        capsys, "titanic", "--version", "1.0.0", "--out", str(tmp_path), "--estimator", "Forest"
    )
    assert code == 2
    assert "unknown estimator 'Forest'" in err


def test_an_unknown_parameter_is_named(capsys, tmp_path):
    code, _, err = run(
        capsys, "titanic", "--version", "1.0.0", "--out", str(tmp_path), "--param", "depth=3"
    )
    assert code == 2
    assert "RandomForestClassifier has no parameter(s) ['depth']" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_depth=6", ("max_depth", 6)),
        ("C=0.5", ("C", 0.5)),
        ("criterion=entropy", ("criterion", "entropy")),
        ('criterion="gini"', ("criterion", "gini")),
        ("max_depth=None", ("max_depth", None)),
        ("bootstrap=false", ("bootstrap", False)),
        ("bootstrap=True", ("bootstrap", True)),
    ],
)
def test_param_values_are_typed(text, expected):
    assert cli.parse_param(text) == expected


@pytest.mark.parametrize("text", ["max_depth", "=3", "max depth=3"])
def test_malformed_params_are_refused(text):
    with pytest.raises(cli.UsageError, match="must look like name=value"):
        cli.parse_param(text)


def test_an_existing_version_is_not_overwritten(capsys, trained_bundles, monkeypatch):
    from batcomputer_training import pipeline

    monkeypatch.setattr(pipeline, "train", lambda *a, **k: pytest.fail("trained anyway"))
    root = str(trained_bundles.root)
    code, _, err = run(capsys, "titanic", "--version", "1.0.0", "--out", root, "--quiet")
    assert code == 3
    assert "already exists; versions are immutable" in err


def test_success_prints_the_bundle_folder(capsys, tmp_path):
    code, out, err = run(capsys, "titanic", "--version", "3.0.0", "--out", str(tmp_path))
    assert code == 0
    assert out.strip() == str(tmp_path / "titanic" / "3.0.0")
    assert "held-out metrics: accuracy=" in err
    assert "model.onnx agrees with scikit-learn" in err
