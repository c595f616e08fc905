"""Training configurations: the shipped ones load, mistakes are named with their place."""

import re
from pathlib import Path

import pytest

from batcomputer_training import config
from batcomputer_training.config import ConfigError

MINIMAL = """
name = "toy"
[data]
description = "toy rows"
license = "CC0"
files = ["toy.csv"]
[[features]]
name = "colour"
type = "categorical"
[[features]]
name = "size"
type = "number"
[target]
column = "label"
[target.flags]
no = ["0"]
yes = ["1"]
[estimator]
default = "LogisticRegression"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return path


def test_shipped_models_are_crime_and_titanic():
    assert config.shipped_models() == ["crime", "titanic"]


def test_crime_configuration():
    crime = config.load("crime")
    assert crime.name == "crime"
    assert [f.name for f in crime.features] == ["crime", "district", "year"]
    assert [f.type for f in crime.features] == ["categorical", "categorical", "integer"]
    assert crime.data.package == "crime-sim-toolkit" and crime.data.version == "1.5.0"
    assert len(crime.data.files) == 3
    assert crime.estimator.default == "RandomForestClassifier"
    district = next(d for d in crime.derived if d.name == "district")
    assert district.regex.fullmatch("Leeds 012A").group(1) == "Leeds"
    assert district.regex.fullmatch("East Riding of Yorkshire 001C").group(1) == (
        "East Riding of Yorkshire"
    )


def test_titanic_configuration_is_the_benchmarked_forest():
    titanic = config.load("titanic")
    assert [f.name for f in titanic.features] == [
        "pclass", "sex", "age", "sibsp", "parch", "fare", "embarked",
    ]  # fmt: skip
    assert titanic.features[0].values == ("1st", "2nd", "3rd")
    assert list(titanic.target.flags) == ["died", "survived"]
    forest = titanic.estimator.params["RandomForestClassifier"]
    assert forest == {"n_estimators": 100, "max_depth": 8}


def test_every_crime_outcome_belongs_to_exactly_one_flag():
    crime = config.load("crime")
    flag_of = crime.target.flag_of()
    assert len(flag_of) == sum(len(v) for v in crime.target.flags.values())
    assert 4 <= len(crime.target.flags) <= 6
    assert flag_of["Investigation complete; no suspect identified"] == 0
    assert list(crime.target.flags)[flag_of["Offender sent to prison"]] == (
        "charged or taken to court"
    )


def test_a_path_loads_and_local_files_are_relative_to_it(tmp_path):
    loaded = config.load(write(tmp_path, MINIMAL))
    assert loaded.name == "toy"
    assert loaded.data.package is None
    assert loaded.data.base_dir == tmp_path
    assert loaded.test_size == 0.25 and loaded.seed == 42
    assert loaded.features[0].column == "colour"


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'cats'.*crime, titanic"):
        config.load("cats")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "absent.toml")


def test_invalid_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "name = \n"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "toy"', 'name = "Toy Model"'), "lowercase"),
        (('[target]\ncolumn = "label"', "[target]"), "[target]: lacks 'column'"),
        (('type = "number"', 'type = "float"'), "feature 'size': type must be one of"),
        (('yes = ["1"]', 'yes = ["0"]'), "'0' is grouped under both 'no' and 'yes'"),
        (('yes = ["1"]', ""), "at least two flags"),
        (('default = "LogisticRegression"', "default = 3"), "'default' must be str"),
        (('license = "CC0"', 'licence = "CC0"'), "unknown key(s) 'licence'"),
        (('type = "number"', 'type = "number"\nvalues = ["a"]'), "categorical features only"),
        (('files = ["toy.csv"]', "files = []"), "non-empty list"),
        (("[estimator]", "[split]\ntest_size = 0.9\n[estimator]"), "test_size must lie"),
    ],
)
def test_mistakes_are_named_with_their_place(tmp_path, change, message):
    old, new = change
    assert old in MINIMAL
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        config.load(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert str(tmp_path / "toy.toml") in str(caught.value)


def test_derived_column_needs_one_capture_group(tmp_path):
    text = MINIMAL + '\n[derived.colour]\nfrom = "raw"\nregex = "^(a)(b)$"\n'
    with pytest.raises(ConfigError, match=r"\[derived.colour\]: 'regex' must have exactly one"):
        config.load(write(tmp_path, text))
