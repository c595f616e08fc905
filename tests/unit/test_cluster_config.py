"""The local cluster's pure parts: rendered configs, PKI description, cache keys, OCI archives."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev import images
from batcomputer_dev.cluster_host import egress_rules, forward_rules
from batcomputer_dev.cluster_pki import certificate_specs, pki_recipe_digest
from batcomputer_dev.k8s_oci import write_file_layer, write_single_layer_archive

PATHS = cfg.ClusterPaths(Path("/srv/state/cluster"))


def spec(name: str):
    return next(s for s in certificate_specs() if s.name == name)


def test_cache_key_names_the_version_and_changes_with_every_build_input():
    key = cfg.k8s_cache_key("reflect2-a", "go1.19.8")
    assert key.startswith("1.20.2-")
    assert len(key.split("-", 1)[1]) == 12
    assert key == cfg.k8s_cache_key("reflect2-a", "go1.19.8")
    assert key != cfg.k8s_cache_key("reflect2-b", "go1.19.8")
    assert key != cfg.k8s_cache_key("reflect2-a", "go1.21.0")


def test_cache_locations_follow_xdg_and_state_dir_settings():
    assert cfg.cache_root({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/batcomputer")
    assert cfg.cache_root({"HOME": "/h"}) == Path("/h/.cache/batcomputer")
    assert cfg.ClusterPaths.from_environment({"BATCOMPUTER_STATE_DIR": "/s"}).root == Path(
        "/s/cluster"
    )
    assert cfg.ClusterPaths.from_environment({}).root == Path("/var/lib/batcomputer/cluster")


def test_digest_files_depends_on_names_and_contents(tmp_path):
    (tmp_path / "a.go").write_text("package a")
    (tmp_path / "b.s").write_text("TEXT")
    files = [tmp_path / "b.s", tmp_path / "a.go"]
    first = cfg.digest_files(files, tmp_path)
    assert first == cfg.digest_files(list(reversed(files)), tmp_path)
    (tmp_path / "b.s").write_text("TEXT2")
    assert cfg.digest_files(files, tmp_path) != first


def test_credential_provider_imports_are_commented_out():
    plugins_go = "import (\n" + "".join(f"\t{line}\n" for line in cfg.CREDENTIAL_PROVIDER_IMPORTS)
    plugins_go += '\t"k8s.io/kubernetes/pkg/volume"\n)\n'
    patched = cfg.comment_out_credential_providers(plugins_go)
    for line in patched.splitlines():
        if "credentialprovider" in line:
            assert line.strip().startswith("//")
    assert '\t"k8s.io/kubernetes/pkg/volume"' in patched


def test_patching_fails_loudly_when_the_source_changed():
    with pytest.raises(ValueError, match="credentialprovider/aws"):
        cfg.comment_out_credential_providers("package app\n")


def test_apiserver_certificate_covers_loopback_service_and_bridge_addresses():
    apiserver = spec("apiserver")
    assert {"127.0.0.1", cfg.API_SERVICE_IP, cfg.BRIDGE_IP} <= set(apiserver.ip_sans)
    assert "kubernetes.default.svc" in apiserver.dns_sans
    extensions = apiserver.extensions()
    assert f"IP:{cfg.BRIDGE_IP}" in extensions
    assert "serverAuth" in extensions
    assert "clientAuth" not in extensions


def test_client_certificates_carry_the_identities_rbac_expects():
    assert spec("admin").subject == "/O=system:masters/CN=batcomputer-admin"
    assert spec("kubelet-client").subject == f"/O=system:nodes/CN=system:node:{cfg.NODE_NAME}"
    assert spec("kube-proxy").subject == "/CN=system:kube-proxy"
    assert "clientAuth" in spec("controller-manager").extensions()
    assert cfg.BRIDGE_IP in spec("kubelet-serving").ip_sans


def test_pki_recipe_digest_is_stable():
    assert pki_recipe_digest() == pki_recipe_digest()
    assert len(pki_recipe_digest()) == 64


def test_containerd_config_keeps_to_its_own_dirs_and_the_vm_limits():
    config = tomllib.loads(cfg.containerd_config(PATHS))
    assert config["root"] == "/srv/state/cluster/containerd/root"
    assert config["state"] == "/srv/state/cluster/containerd/state"
    assert config["grpc"]["address"] == str(PATHS.containerd_socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == cfg.PAUSE_IMAGE
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(PATHS.cni_config_dir)}
    # The legacy mirrors setting would fall back to the real registry host.
    assert cri["registry"] == {"config_path": str(PATHS.registry_hosts_dir)}
    assert "io.containerd.tracing.processor.v1.otlp" in config["disabled_plugins"]


def test_every_registry_resolves_to_a_closed_loopback_port():
    hosts = tomllib.loads(cfg.registry_hosts_toml())
    assert hosts["server"] == cfg.CLOSED_MIRROR_ENDPOINT
    # containerd 1.6 discards a hosts.toml without a host table.
    assert list(hosts["host"]) == [cfg.CLOSED_MIRROR_ENDPOINT]
    assert cfg.CLOSED_MIRROR_ENDPOINT.startswith("http://127.0.0.1:")
    assert {"ghcr.io", "docker.io", "registry.k8s.io", "quay.io"} <= set(cfg.MIRRORED_REGISTRIES)


def test_cni_bridge_never_masquerades_and_uses_the_pod_subnet():
    plugin = json.loads(cfg.cni_conflist(PATHS))["plugins"][0]
    assert plugin["type"] == "bridge"
    assert plugin["bridge"] == cfg.BRIDGE_NAME
    assert plugin["ipMasq"] is False
    assert plugin["ipam"]["ranges"] == [[{"subnet": cfg.POD_SUBNET, "gateway": cfg.BRIDGE_IP}]]
    assert plugin["ipam"]["dataDir"] == str(PATHS.cni_ipam_dir)


def test_kubelet_config_suits_this_machine():
    kubelet = yaml.safe_load(cfg.kubelet_config(PATHS))
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["failSwapOn"] is False
    assert kubelet["address"] == cfg.BRIDGE_IP
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["resolvConf"] == str(PATHS.config / "resolv.conf")
    assert kubelet["authentication"]["anonymous"]["enabled"] is False


def test_pod_resolver_has_no_outside_nameserver():
    nameservers = [
        line.split()[1] for line in cfg.resolv_conf().splitlines() if line.startswith("nameserver")
    ]
    assert nameservers == ["127.0.0.1"]


def test_kube_proxy_uses_iptables_and_leaves_conntrack_sysctls_alone():
    proxy = yaml.safe_load(cfg.kube_proxy_config(PATHS))
    assert proxy["mode"] == "iptables"
    assert proxy["clusterCIDR"] == cfg.POD_SUBNET
    assert proxy["conntrack"]["maxPerCore"] == 0
    assert proxy["nodePortAddresses"] == [f"{cfg.BRIDGE_IP}/32"]


def test_kubeconfig_points_at_the_bridge_address_with_the_users_certificate():
    kubeconfig = yaml.safe_load(cfg.kubeconfig(PATHS, "admin"))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{cfg.BRIDGE_IP}:6443"
    assert kubeconfig["users"][0]["user"]["client-certificate"] == str(PATHS.pki / "admin.crt")


def test_apiserver_listens_on_the_bridge_only_and_etcd_on_loopback():
    apiserver = cfg.component_command("kube-apiserver", PATHS, Path("/bin-dir"))
    assert apiserver[0] == "/bin-dir/kube-apiserver"
    assert f"--bind-address={cfg.BRIDGE_IP}" in apiserver
    assert "--insecure-port=0" in apiserver
    assert any(arg.startswith("--service-account-signing-key-file=") for arg in apiserver)
    etcd = cfg.component_command("etcd", PATHS, Path("/bin-dir"))
    urls = [arg.split("=", 1)[1] for arg in etcd if "-urls=" in arg and arg.split("=", 1)[1]]
    assert urls and all(url.startswith("http://127.0.0.1:") for url in urls)


def test_kubelet_runs_with_ec2_metadata_disabled_and_the_bridge_as_node_ip():
    assert cfg.component_environment("kubelet") == {"AWS_EC2_METADATA_DISABLED": "true"}
    kubelet = cfg.component_command("kubelet", PATHS, Path("/bin-dir"))
    assert f"--node-ip={cfg.BRIDGE_IP}" in kubelet
    assert f"--container-runtime-endpoint=unix://{PATHS.containerd_socket}" in kubelet


def test_every_component_has_a_command():
    for component in cfg.COMPONENTS_IN_START_ORDER:
        assert cfg.component_command(component, PATHS, Path("/bin-dir"))


def test_forward_rules_refuse_traffic_between_the_bridge_and_any_other_interface():
    rules = [" ".join(rule) for rule in forward_rules()]
    assert f"-i {cfg.BRIDGE_NAME} ! -o {cfg.BRIDGE_NAME} -j REJECT" in rules[0]
    assert f"! -i {cfg.BRIDGE_NAME} -o {cfg.BRIDGE_NAME} -j REJECT" in rules[1]


def test_component_egress_may_use_loopback_and_the_bridge_only():
    rules = [" ".join(rule) for rule in egress_rules()]
    assert rules == ["-o lo -j RETURN", f"-o {cfg.BRIDGE_NAME} -j RETURN", "-j REJECT"]


def test_single_layer_oci_archive_is_self_consistent(tmp_path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    layer = tmp_path / "layer.tar"
    write_file_layer({"pause": (binary, 0o755)}, layer)
    archive = tmp_path / "image.oci.tar"
    write_single_layer_archive(layer, "registry.k8s.io/pause:test", archive, entrypoint=["/pause"])

    with tarfile.open(archive) as oci:
        blobs = {member.name: oci.extractfile(member).read() for member in oci if member.isfile()}
    index = json.loads(blobs["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "registry.k8s.io/pause:test"
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(blobs["blobs/sha256/" + entry["digest"].split(":")[1]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    with tarfile.open(layer) as layer_tar:
        (member,) = layer_tar.getmembers()
    assert (member.name, member.mode, member.uid) == ("pause", 0o755, 0)


def test_image_requirements_are_the_extras_plus_the_build_backend():
    pyproject = {
        "project": {
            "dependencies": ["numpy"],
            "optional-dependencies": {"server": ["flask"], "operator": ["kopf"]},
        }
    }
    assert images.image_requirements(pyproject, ("server",)) == [
        "numpy",
        "flask",
        *images.BUILD_TOOL_REQUIREMENTS,
    ]


def test_image_cache_keys_track_their_inputs():
    assert images.wheelhouse_key(["a", "b"], "cp311") == images.wheelhouse_key(["b", "a"], "cp311")
    assert images.wheelhouse_key(["a"], "cp311") != images.wheelhouse_key(["a"], "cp312")
    assert images.base_image_key("1.0.128") != images.base_image_key("1.0.129")


def test_image_names_are_the_ones_the_chart_and_operator_use():
    assert images.IMAGES["server"].name == "ghcr.io/batcomputer/batcomputer-server:0.1.0"
    assert images.IMAGES["operator"].name == "ghcr.io/batcomputer/batcomputer-operator:0.1.0"
