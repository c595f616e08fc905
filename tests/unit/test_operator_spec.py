"""A BatModel spec is checked again by the operator before anything is built from it."""

import pytest

from batcomputer_operator.spec import BatModelSpec, IngressSpec, SpecError, parse_spec

HEX = "ab" * 32
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/1.4.2"


def test_minimal_spec_gets_defaults():
    spec = parse_spec({"version": "1.4.2", "source": {"uri": URI}})
    assert spec == BatModelSpec(version="1.4.2", source_uri=URI)
    assert spec.replicas == 1


def test_full_spec_is_kept_in_file_order():
    spec = parse_spec(
        {
            "version": "2.0.0-rc.1+build.5",
            "source": {
                "uri": URI,
                "credentialsSecret": "blob-reader",
                "sha256": {"flags.pkl": HEX, "model.pkl": HEX},
            },
            "replicas": 0,
            "resources": {"limits": {"cpu": "1"}},
            "fetch": {"resources": {"requests": {"memory": "64Mi"}}},
            "ingress": {"path": "/models/crime", "host": "models.local", "className": "nginx"},
            "serverImage": "registry.local/server:1",
        }
    )
    assert spec.sha256 == (("model.pkl", HEX), ("flags.pkl", HEX))
    assert spec.credentials_secret == "blob-reader"
    assert spec.replicas == 0
    assert spec.resources == {"limits": {"cpu": "1"}}
    assert spec.fetch_resources == {"requests": {"memory": "64Mi"}}
    assert spec.ingress == IngressSpec("/models/crime", "models.local", "nginx")
    assert spec.server_image == "registry.local/server:1"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"version": "1.4", "source": {"uri": URI}}, "spec.version"),
        ({"version": "v1.4.2", "source": {"uri": URI}}, "spec.version"),
        ({"version": "01.4.2", "source": {"uri": URI}}, "spec.version"),
        ({"version": "1.4.2"}, "spec.source"),
        ({"version": "1.4.2", "source": {"uri": "ftp://x/y"}}, "spec.source.uri"),
        (
            {"version": "1.4.2", "source": {"uri": URI, "sha256": {"model.pk": HEX}}},
            "spec.source.sha256",
        ),
        (
            {"version": "1.4.2", "source": {"uri": URI, "sha256": {"model.pkl": HEX.upper()}}},
            "spec.source.sha256.model.pkl",
        ),
        ({"version": "1.4.2", "source": {"uri": URI}, "replicas": 101}, "spec.replicas"),
        ({"version": "1.4.2", "source": {"uri": URI}, "replicas": -1}, "spec.replicas"),
        ({"version": "1.4.2", "source": {"uri": URI}, "replicas": True}, "spec.replicas"),
        ({"version": "1.4.2", "source": {"uri": URI}, "ingress": {"path": "x"}}, "spec.ingress"),
        (
            {"version": "1.4.2", "source": {"uri": URI}, "resources": {"claims": []}},
            "spec.resources",
        ),
        ({"version": "1.4.2", "source": {"uri": URI}, "fetch": "big"}, "spec.fetch"),
        (
            {"version": "1.4.2", "source": {"uri": URI}, "fetch": {"resources": {"claims": []}}},
            "spec.fetch.resources",
        ),
        (
            {"version": "1.4.2", "source": {"uri": URI}, "fetch": {"resources": {"limits": "1"}}},
            "spec.fetch.resources.limits",
        ),
    ],
)
def test_bad_spec_names_the_field(raw, field):
    with pytest.raises(SpecError, match=f"^{field}"):
        parse_spec(raw)


@pytest.mark.parametrize(
    ("pins", "named"),
    [
        ({"modle.pkl": HEX}, "'modle.pkl'"),
        ({"model.pkl": HEX, "lookup.pkl": HEX, "flag.pkl": HEX}, "'flag.pkl'"),
        ({"Model.pkl": HEX, "weights.bin": "not even hex"}, "'Model.pkl', 'weights.bin'"),
    ],
)
def test_a_mistyped_pin_refuses_the_spec_naming_the_key_and_the_allowed_ones(pins, named):
    # Dropping the unknown key would leave the file it meant unpinned: fail closed.
    raw = {"version": "1.4.2", "source": {"uri": URI, "sha256": pins}}
    with pytest.raises(SpecError) as refused:
        parse_spec(raw)
    assert str(refused.value) == (
        f"spec.source.sha256: unknown file {named}; allowed: model.pkl, lookup.pkl, flags.pkl"
    )


def test_pins_must_be_a_map():
    with pytest.raises(SpecError, match=r"^spec\.source\.sha256: 'ab' is not a map"):
        parse_spec({"version": "1.4.2", "source": {"uri": URI, "sha256": "ab"}})


def test_the_bundle_digest_is_kept_and_a_malformed_one_names_the_field():
    digest = "sha256:" + HEX
    spec = parse_spec({"version": "1.4.2", "source": {"uri": URI, "digest": digest}})
    assert spec.digest == digest
    for bad in (HEX, "sha256:" + HEX.upper(), "sha256:" + HEX[:-1], 7, ""):
        with pytest.raises(SpecError, match=r"^spec\.source\.digest: .* is not sha256: and 64"):
            parse_spec({"version": "1.4.2", "source": {"uri": URI, "digest": bad}})
