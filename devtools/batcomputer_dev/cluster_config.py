"""The local cluster's fixed layout and the pure rendering of its configuration files.

Nothing here touches the machine: paths are computed, texts are rendered, keys
are hashed, so all of it is unit-tested without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Debian bookworm's Kubernetes source package, pinned so the cache key and the
# verified tarball digest cannot drift under us.
K8S_VERSION = "1.20.2"
K8S_DEBIAN_SOURCE_VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
K8S_ORIG_TARBALL = "kubernetes_1.20.5+really1.20.2.orig.tar.gz"
K8S_ORIG_SHA256 = "b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc"

CONTROL_PLANE_TARGETS = (
    "cmd/kube-apiserver",
    "cmd/kube-controller-manager",
    "cmd/kube-scheduler",
    "cmd/kubectl",
)
# Built with the providerless tag so no cloud provider code (and no metadata
# probe) is linked in.
NODE_TARGETS = ("cmd/kubelet", "cmd/kube-proxy")
K8S_BINARIES = tuple(target.rsplit("/", 1)[1] for target in CONTROL_PLANE_TARGETS + NODE_TARGETS)
PAUSE_BINARY = "pause"

# kubelet 1.20 links the in-tree credential providers through these imports;
# the AWS one probes 169.254.169.254 at start-up even when built providerless.
CREDENTIAL_PROVIDER_IMPORTS = (
    '_ "k8s.io/kubernetes/pkg/credentialprovider/aws"',
    '_ "k8s.io/kubernetes/pkg/credentialprovider/azure"',
    '_ "k8s.io/kubernetes/pkg/credentialprovider/gcp"',
)
KUBELET_PLUGINS_FILE = "cmd/kubelet/app/plugins.go"
VENDORED_REFLECT2 = "vendor/github.com/modern-go/reflect2"
DEBIAN_REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")

NODE_NAME = "batcomputer-node"
BRIDGE_NAME = "batcni0"
BRIDGE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
SERVICE_SUBNET = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
AZURITE_PORT = 10000
ETCD_CLIENT_URL = "http://127.0.0.1:23790"
ETCD_PEER_URL = "http://127.0.0.1:23800"
# Registry mirrors point here; nothing listens, so a mistaken pull fails at once.
CLOSED_MIRROR_ENDPOINT = "http://127.0.0.1:9"
# `_default` covers every other registry where containerd supports it.
MIRRORED_REGISTRIES = (
    "ghcr.io",
    "docker.io",
    "registry-1.docker.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "quay.io",
    "_default",
)
PAUSE_IMAGE = "registry.k8s.io/pause:batcomputer-local"
CONTAINERD_NAMESPACE = "k8s.io"

FORWARD_CHAIN = "BATCOMPUTER-FORWARD"
# Every component runs in this cgroup (v2 hierarchy); an OUTPUT rule matching it
# refuses any packet of theirs that would leave through neither loopback nor the
# bridge, so no component can reach a metadata address or the internet.
EGRESS_CHAIN = "BATCOMPUTER-EGRESS"
COMPONENT_CGROUP = "batcomputer-cluster"
# Sysctls that kubelet, kube-proxy or the CNI bridge may change; `up` records
# their values before starting anything and `down` puts them back.
TOUCHED_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)

COMPONENTS_IN_START_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
)


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "/root")) / ".cache")
    return Path(base) / "batcomputer"


def state_root(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("BATCOMPUTER_STATE_DIR") or "/var/lib/batcomputer")


@dataclass(frozen=True)
class ClusterPaths:
    root: Path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ClusterPaths:
        return cls(state_root(environ) / "cluster")

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_config_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.config / "registry-hosts"

    @property
    def saved_sysctls(self) -> Path:
        return self.root / "saved-sysctls.json"

    def pid_file(self, component: str) -> Path:
        return self.pids / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def digest_files(paths: Iterable[Path], root: Path) -> str:
    """sha256 over relative names and contents, independent of listing order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def k8s_cache_key(reflect2_digest: str, go_version: str) -> str:
    """`<version>-<hash>` of everything that changes the built binaries."""
    recipe = {
        "debian_source": K8S_DEBIAN_SOURCE_VERSION,
        "orig_sha256": K8S_ORIG_SHA256,
        "reflect2": reflect2_digest,
        "go": go_version,
        "control_plane_targets": CONTROL_PLANE_TARGETS,
        "node_targets": NODE_TARGETS,
        "node_tags": "providerless",
        "removed_imports": CREDENTIAL_PROVIDER_IMPORTS,
        "cgo": "0",
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return f"{K8S_VERSION}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def comment_out_credential_providers(plugins_go: str) -> str:
    """The kubelet plugin list without the cloud credential provider imports."""
    patched = plugins_go
    for import_line in CREDENTIAL_PROVIDER_IMPORTS:
        if import_line not in patched:
            raise ValueError(f"{KUBELET_PLUGINS_FILE} no longer contains {import_line}")
        patched = patched.replace(import_line, f"// removed by batcomputer: {import_line}")
    return patched


def containerd_config(paths: ClusterPaths) -> str:
    """containerd's own config: private root, state and socket; CRI tuned for this VM."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
# Storage and tracing plugins nobody here uses; otlp could export traces.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{paths.containerd_socket}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.containerd_root / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # The VM lacks CAP_SYS_RESOURCE: runc fails when asked to lower oom_score_adj.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{paths.containerd_state / "runc"}"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{paths.cni_config_dir}"
  [{cri}.registry]
    config_path = "{paths.registry_hosts_dir}"
"""


def registry_hosts_toml() -> str:
    """Every project registry resolves to a closed loopback port, never to the internet.

    `server` replaces the upstream host instead of adding a fallback to it, which
    the older `registry.mirrors` setting would do. containerd 1.6 ignores the
    whole file (and falls back to the upstream host) unless a `host` table exists.
    """
    return (
        f'server = "{CLOSED_MIRROR_ENDPOINT}"\n\n'
        f'[host."{CLOSED_MIRROR_ENDPOINT}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )


def cni_conflist(paths: ClusterPaths) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "batcomputer",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE_NAME,
                    "isGateway": True,
                    # No masquerading: pod traffic must never leave through another interface.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(paths.cni_ipam_dir),
                    },
                }
            ],
        },
        indent=2,
    )


def resolv_conf() -> str:
    # There is no cluster DNS; a pod's lookups go to its own loopback and fail at
    # once instead of reaching any outside resolver.
    return "nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n"


def kubelet_config(paths: ClusterPaths) -> str:
    pki = paths.pki
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {BRIDGE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki / "ca.crt"}}}
authorization: {{mode: Webhook}}
tlsCertFile: {pki / "kubelet-serving.crt"}
tlsPrivateKeyFile: {pki / "kubelet-serving.key"}
cgroupDriver: cgroupfs
failSwapOn: false
resolvConf: {paths.config / "resolv.conf"}
clusterDomain: cluster.local
volumePluginDir: {paths.kubelet_root / "volume-plugins"}
serializeImagePulls: false
# Imported images cannot be pulled again, so image garbage collection stays off.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}}
"""


def kube_proxy_config(paths: ClusterPaths) -> str:
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {paths.config / "kube-proxy.kubeconfig"}}}
mode: iptables
hostnameOverride: {NODE_NAME}
bindAddress: {BRIDGE_IP}
clusterCIDR: {POD_SUBNET}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["{BRIDGE_IP}/32"]
# Leave the host's conntrack sysctls as they are.
conntrack: {{maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"""


def kubeconfig(paths: ClusterPaths, user: str) -> str:
    """A kubeconfig for one of the client certificates (named like the PKI files)."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: batcomputer
  cluster:
    server: https://{BRIDGE_IP}:{API_PORT}
    certificate-authority: {paths.pki / "ca.crt"}
users:
- name: {user}
  user:
    client-certificate: {paths.pki / f"{user}.crt"}
    client-key: {paths.pki / f"{user}.key"}
contexts:
- name: batcomputer
  context: {{cluster: batcomputer, user: {user}}}
current-context: batcomputer
"""


def component_command(component: str, paths: ClusterPaths, bin_dir: Path) -> list[str]:
    pki, config = paths.pki, paths.config
    commands = {
        "etcd": [
            "etcd",
            "--name=batcomputer",
            f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls={ETCD_CLIENT_URL}",
            f"--advertise-client-urls={ETCD_CLIENT_URL}",
            f"--listen-peer-urls={ETCD_PEER_URL}",
            f"--initial-advertise-peer-urls={ETCD_PEER_URL}",
            f"--initial-cluster=batcomputer={ETCD_PEER_URL}",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            # Bound to the bridge so pods reach it through the `kubernetes` Service.
            f"--advertise-address={BRIDGE_IP}",
            f"--bind-address={BRIDGE_IP}",
            f"--secure-port={API_PORT}",
            "--insecure-port=0",
            f"--etcd-servers={ETCD_CLIENT_URL}",
            f"--service-cluster-ip-range={SERVICE_SUBNET}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
        ],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={config / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={config / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={config / 'controller-manager.kubeconfig'}",
            "--port=0",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_SUBNET}",
        ],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={config / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={config / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={config / 'scheduler.kubeconfig'}",
            "--port=0",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ],
        "containerd": ["containerd", f"--config={config / 'containerd.toml'}"],
        "kubelet": [
            str(bin_dir / "kubelet"),
            f"--config={config / 'kubelet.yaml'}",
            f"--kubeconfig={config / 'kubelet.kubeconfig'}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{paths.containerd_socket}",
            f"--image-service-endpoint=unix://{paths.containerd_socket}",
            f"--root-dir={paths.kubelet_root}",
            f"--cert-dir={paths.kubelet_root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            # The node's address is the bridge: the apiserver reaches the kubelet there.
            f"--node-ip={BRIDGE_IP}",
        ],
        "kube-proxy": [str(bin_dir / "kube-proxy"), f"--config={config / 'kube-proxy.yaml'}"],
    }
    return commands[component]


def component_environment(component: str) -> dict[str, str]:
    if component == "kubelet":
        # Belt and braces with the providerless build: no AWS SDK metadata lookups.
        return {"AWS_EC2_METADATA_DISABLED": "true"}
    return {}
