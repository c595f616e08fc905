"""Manifests built from a BatModel: hardened pods, blue/green-ready names, stable Service."""

import copy

import pytest

from batcomputer_operator.config import DEFAULT_SERVER_IMAGE, OperatorConfig
from batcomputer_operator.diff import differs
from batcomputer_operator.manifests import (
    Owner,
    deployment,
    ingress,
    service,
    service_url,
)
from batcomputer_operator.spec import parse_spec

OWNER = Owner(name="crime", namespace="models", uid="0b9c7a8e-1111-2222-3333-444455556666")
URI = "http://10.244.0.1:10000/devstoreaccount1/models/crime/1.4.2"
HEX = "0f" * 32
CONFIG = OperatorConfig()


def _spec(**extra):
    return parse_spec({"version": "1.4.2", "source": {"uri": URI}, **extra})


def _pod(manifest):
    return manifest["spec"]["template"]["spec"]


def _containers(manifest):
    pod = _pod(manifest)
    return pod["initContainers"][0], pod["containers"][0]


def test_deployment_is_named_and_labelled_for_its_version():
    manifest = deployment(OWNER, _spec(replicas=3), CONFIG)
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("crime-v1-4-2", "models")
    assert meta["annotations"] == {"batcomputer.io/version": "1.4.2"}
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "batcomputer-operator"
    assert manifest["spec"]["replicas"] == 3
    assert manifest["spec"]["selector"]["matchLabels"] == {
        "batcomputer.io/model": "crime",
        "batcomputer.io/version": "1.4.2",
    }
    template_labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert manifest["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert manifest["spec"]["progressDeadlineSeconds"] == 300
    later = deployment(OWNER, _spec(), OperatorConfig(progress_deadline_seconds=900))
    assert later["spec"]["progressDeadlineSeconds"] == 900


def test_children_are_owned_by_the_batmodel():
    spec = _spec(ingress={"path": "/models/crime"})
    children = [deployment(OWNER, spec, CONFIG), service(OWNER, "1.4.2")]
    children.append(ingress(OWNER, spec, CONFIG, "1.4.2"))
    for child in children:
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "batcomputer.io/v1alpha1",
                "kind": "BatModel",
                "name": "crime",
                "uid": OWNER.uid,
                "controller": True,
            }
        ]


def test_pods_are_hardened():
    manifest = deployment(OWNER, _spec(), CONFIG)
    pod = _pod(manifest)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in _containers(manifest):
        assert container["securityContext"] == {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["volumes"] == [
        {"name": "bundle", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "shadow", "configMap": {"name": "crime-v1-4-2-shadow", "optional": True}},
    ]


@pytest.mark.parametrize(
    ("limit", "quantity"),
    [(1 << 30, "1Gi"), (512 << 20, "512Mi"), (1536 << 20, "1536Mi"), (3 << 40, "3Ti")],
)
def test_the_bundle_size_limit_bounds_the_volume_and_the_fetcher(limit, quantity):
    manifest = deployment(OWNER, _spec(), OperatorConfig(bundle_size_limit=limit))
    fetch, _ = _containers(manifest)
    volumes = {volume["name"]: volume for volume in _pod(manifest)["volumes"]}
    # Written as the API server stores it, so the live Deployment never looks changed.
    assert volumes["bundle"]["emptyDir"] == {"sizeLimit": quantity}
    assert fetch["args"][fetch["args"].index("--max-bytes") + 1] == str(limit)


def test_fetch_runs_first_with_the_bundle_digest_and_pinned_file_digests():
    bundle_digest = "sha256:" + HEX
    pins = {"model.pkl": HEX, "flags.pkl": HEX}
    spec = _spec(source={"uri": URI, "digest": bundle_digest, "sha256": pins})
    fetch, _ = _containers(deployment(OWNER, spec, CONFIG))
    assert fetch["name"] == "fetch"
    assert fetch["command"] == ["batcomputer-fetch"]
    # The fetcher renames the finished bundle into /bundle/verified, on the volume.
    assert {"name": "bundle", "mountPath": "/bundle"} in fetch["volumeMounts"]
    assert fetch["args"] == [
        "--source",
        URI,
        "--dest",
        "/bundle/verified",
        "--max-bytes",
        str(1 << 30),
        "--digest",
        bundle_digest,
        "--sha256",
        f"model.pkl={HEX}",
        "--sha256",
        f"flags.pkl={HEX}",
    ]
    assert fetch["env"] == []


def test_fetch_reads_credentials_from_the_secret_mounted_as_read_only_files():
    spec = _spec(source={"uri": URI, "credentialsSecret": "blob-reader"})
    manifest = deployment(OWNER, spec, CONFIG)
    fetch, server = _containers(manifest)
    credentials_dir = "/var/run/secrets/batcomputer.io/blob"
    assert fetch["args"][-2:] == ["--credentials-dir", credentials_dir]
    assert {
        "name": "blob-credentials",
        "mountPath": credentials_dir,
        "readOnly": True,
    } in fetch["volumeMounts"]
    assert {
        "name": "blob-credentials",
        "secret": {
            "secretName": "blob-reader",
            "optional": True,
            "defaultMode": 0o440,
            "items": [
                {"key": "connectionString", "path": "connectionString"},
                {"key": "sasToken", "path": "sasToken"},
            ],
        },
    } in _pod(manifest)["volumes"]
    # nothing secret in any container's environment; the server never sees the Secret
    assert fetch["env"] == []
    assert server["env"] == []
    assert all(mount["name"] != "blob-credentials" for mount in server["volumeMounts"])
    assert "Secret" not in repr(fetch.get("envFrom", []))


def test_server_serves_the_fetched_bundle_with_probes():
    _, server = _containers(deployment(OWNER, _spec(), CONFIG))
    assert server["command"] == ["batcomputer-server"]
    assert server["args"] == [
        *("--bundle", "/bundle/verified", "--port", "8000"),
        *("--shadow-config", "/etc/batcomputer/shadow/settings.json"),
    ]
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # a retired version drains before it stops, so a Service switch drops no request
    assert server["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert {"name": "bundle", "mountPath": "/bundle", "readOnly": True} in server["volumeMounts"]
    assert server["image"] == DEFAULT_SERVER_IMAGE


def test_every_version_reads_shadow_settings_from_its_own_optional_config_map():
    # Named after the version's own Deployment: only the serving version's ConfigMap is
    # ever written with a URL, so no other version copies, and a missing one copies nothing.
    manifest = deployment(OWNER, _spec(), CONFIG)
    _, server = _containers(manifest)
    volume = next(v for v in _pod(manifest)["volumes"] if v["name"] == "shadow")
    assert volume["configMap"] == {
        "name": f"{manifest['metadata']['name']}-shadow",
        "optional": True,
    }
    assert {"name": "shadow", "mountPath": "/etc/batcomputer/shadow", "readOnly": True} in server[
        "volumeMounts"
    ]


def test_every_container_has_requests_and_a_memory_limit_by_default():
    fetch, server = _containers(deployment(OWNER, _spec(), CONFIG))
    assert fetch["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert server["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_fetch_resources_come_from_the_spec_whole():
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    fetch, server = _containers(deployment(OWNER, _spec(fetch={"resources": resources}), CONFIG))
    assert fetch["resources"] == resources
    assert server["resources"]["limits"] == {"memory": "512Mi"}
    # a spec that sets only a limit gets no default request that could exceed it
    only_limit = {"limits": {"memory": "64Mi"}}
    fetch, _ = _containers(deployment(OWNER, _spec(fetch={"resources": only_limit}), CONFIG))
    assert fetch["resources"] == only_limit


def test_ingress_path_becomes_the_server_root_path():
    _, server = _containers(deployment(OWNER, _spec(ingress={"path": "/models/crime"}), CONFIG))
    assert server["env"] == [{"name": "BATCOMPUTER_ROOT_PATH", "value": "/models/crime"}]


def test_image_and_resources_come_from_spec_then_config():
    config = OperatorConfig(server_image="registry.local/server:2")
    resources = {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}}
    fetch, server = _containers(deployment(OWNER, _spec(resources=resources), config))
    assert fetch["image"] == server["image"] == "registry.local/server:2"
    assert server["resources"] == resources
    spec = _spec(serverImage="registry.local/server:3")
    fetch, server = _containers(deployment(OWNER, spec, config))
    assert fetch["image"] == server["image"] == "registry.local/server:3"


def _template_hash(spec, config=CONFIG):
    annotations = deployment(OWNER, spec, config)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["batcomputer.io/version"] == "1.4.2"
    return annotations["batcomputer.io/template-hash"]


def test_pods_carry_a_digest_of_their_template():
    digest = _template_hash(_spec())
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert _template_hash(_spec()) == digest
    # replicas is not part of the pods: scaling keeps every pod current
    assert _template_hash(_spec(replicas=3)) == digest
    # equal quantities spelled differently are the same pods
    spelled = {"limits": {"cpu": "0.5", "memory": "1Gi"}}
    respelled = {"limits": {"cpu": "500m", "memory": "1024Mi"}}
    assert _template_hash(_spec(resources=spelled)) == _template_hash(_spec(resources=respelled))


@pytest.mark.parametrize(
    ("spec", "config"),
    [
        (_spec(source={"uri": URI, "credentialsSecret": "blob-reader"}), CONFIG),
        (_spec(source={"uri": URI, "sha256": {"model.pkl": HEX}}), CONFIG),
        (_spec(source={"uri": URI, "digest": "sha256:" + HEX}), CONFIG),
        (_spec(serverImage="registry.local/server:3"), CONFIG),
        (_spec(), OperatorConfig(server_image="registry.local/server:2")),
        (_spec(resources={"requests": {"cpu": "100m"}}), CONFIG),
        (_spec(fetch={"resources": {"limits": {"memory": "1Gi"}}}), CONFIG),
        (_spec(ingress={"path": "/models/crime"}), CONFIG),  # the server's env
    ],
)
def test_any_change_to_the_pods_changes_the_digest(spec, config):
    assert _template_hash(spec, config) != _template_hash(_spec())


def test_service_routes_to_one_version_only():
    manifest = service(OWNER, "2.0.0+build.1")
    assert manifest["metadata"]["name"] == "crime"
    assert manifest["metadata"]["annotations"] == {
        "batcomputer.io/serving-version": "2.0.0+build.1"
    }
    assert manifest["spec"]["selector"] == {
        "batcomputer.io/model": "crime",
        "batcomputer.io/version": "2.0.0_build.1",
    }
    assert manifest["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}
    ]
    assert service_url(OWNER) == "http://crime.models.svc/api"


def test_no_ingress_unless_asked():
    assert ingress(OWNER, _spec(), CONFIG, "1.4.2") is None


def test_ingress_defaults_come_from_config():
    config = OperatorConfig(ingress_class="nginx", ingress_host="models.local")
    manifest = ingress(OWNER, _spec(ingress={"path": "/models/crime"}), config, "1.4.2")
    assert manifest["apiVersion"] == "networking.k8s.io/v1"
    assert manifest["spec"] == {
        "ingressClassName": "nginx",
        "rules": [
            {
                "host": "models.local",
                "http": {
                    "paths": [
                        {
                            "path": "/models/crime",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "crime", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ],
    }
    own = _spec(ingress={"path": "/m", "host": "a.example", "className": "traefik"})
    manifest = ingress(OWNER, own, config, "1.4.2")
    assert manifest["spec"]["ingressClassName"] == "traefik"
    assert manifest["spec"]["rules"][0]["host"] == "a.example"


def _live(manifest):
    """What the API server returns: the manifest plus defaults and status."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(uid="x", resourceVersion="7", generation=2)
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["timeoutSeconds"] = 1
    live["status"] = {"replicas": 1}
    return live


def test_server_defaults_are_not_drift():
    manifest = deployment(OWNER, _spec(), CONFIG)
    assert not differs(manifest, _live(manifest))


def test_a_deployment_from_before_the_template_digest_is_drift():
    manifest = deployment(OWNER, _spec(), CONFIG)
    live = _live(manifest)
    live["spec"]["template"]["metadata"]["annotations"].pop("batcomputer.io/template-hash")
    assert differs(manifest, live)


@pytest.mark.parametrize(
    "edit",
    [
        lambda live: live["spec"].update(replicas=5),
        lambda live: live["spec"]["template"]["spec"]["containers"][0].update(image="evil:1"),
        lambda live: live["spec"]["template"]["spec"]["containers"][0]["args"].append("--x"),
        lambda live: live["spec"]["template"]["spec"]["containers"][0].update(
            env=[{"name": "BATCOMPUTER_ROOT_PATH", "value": "/old"}]
        ),
        lambda live: live["metadata"]["labels"].pop("batcomputer.io/model"),
    ],
)
def test_hand_edits_are_drift(edit):
    manifest = deployment(OWNER, _spec(), CONFIG)
    live = _live(manifest)
    edit(live)
    assert differs(manifest, live)


def test_quantities_compare_by_value():
    resources = {"limits": {"cpu": "0.5", "memory": "1Gi"}, "requests": {"cpu": 1}}
    manifest = deployment(OWNER, _spec(resources=resources), CONFIG)
    live = _live(manifest)
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "500m", "memory": "1024Mi"},
        "requests": {"cpu": "1"},
    }
    assert not differs(manifest, live)
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "600m"
    assert differs(manifest, live)
